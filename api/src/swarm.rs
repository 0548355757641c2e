//! The crypto inventory of a Docker Swarm manager, read offline from its
//! state directory (`moat audit report --docker-swarm DIR`).
//!
//! `moat-swarm` fills it in; `moat-report` checks it against the same
//! policy as a moat cluster's [`crate::CryptoInventory`]; the CLI renders
//! both the same way. What the files alone cannot show (without the unlock
//! key, with autolock on) is `None` here and named in
//! [`SwarmInventory::not_checked`]: nothing is guessed.

use serde::{Deserialize, Serialize};

use crate::{RootCaInfo, SecretSummary, TlsProbe};

/// A Swarm manager's crypto inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmInventory {
    /// When the inventory was taken (RFC 3339).
    pub generated_at: String,
    /// The state directory read.
    pub state_dir: String,
    /// The cluster id (the node certificate's `O=`).
    pub cluster_id: String,
    /// This node's id (its certificate's `CN=`).
    pub node_id: String,
    /// This node's role as its certificate says (`manager` or `worker`).
    pub node_role: String,
    /// Whether an unlock key was given.
    pub unlock_key_given: bool,
    /// Whether the raft store could be decrypted and read (with the key,
    /// or without one when the data key is stored in clear).
    pub store_read: bool,
    /// What could not be checked, and why (one sentence each).
    pub not_checked: Vec<String>,
    /// The root CA in `certificates/swarm-root-ca.crt`.
    pub root_ca: RootCaInfo,
    /// Whether the store's root CA certificate is the file's (None: store
    /// not read).
    pub root_ca_matches_store: Option<bool>,
    /// A root CA rotation under way (`root_ca.root_rotation`).
    pub root_rotation: Option<SwarmRootRotation>,
    /// Whether the root CA's private key is kept in the store (always so
    /// for a Swarm with an internal CA; None: store not read).
    pub root_ca_key_in_store: Option<bool>,
    /// The root CA key's PEM type in the store (`EC PRIVATE KEY`,
    /// unencrypted), when it is there.
    pub root_ca_key_format: Option<String>,
    /// This node's certificate (`certificates/swarm-node.crt`).
    pub node_cert: SwarmCert,
    /// Every node in the store.
    pub nodes: Vec<SwarmNode>,
    /// The cluster's node certificate lifetime (`--cert-expiry`), seconds.
    pub cert_expiry_seconds: Option<u64>,
    /// External CAs configured (`--external-ca`).
    pub external_cas: Vec<SwarmExternalCa>,
    /// Whether the operator supplied the signing CA (`signing_ca_cert`).
    pub signing_ca_supplied: Option<bool>,
    /// Certificates forced to rotate (`docker swarm ca --rotate` count).
    pub force_rotate: Option<u64>,
    /// The join tokens (never their secrets).
    pub join_tokens: Vec<SwarmJoinToken>,
    /// Autolock, from every place it shows.
    pub autolock: SwarmAutolock,
    /// How `swarm-node.key` (the node's TLS key) is protected.
    pub key_protection: SwarmKeyProtection,
    /// The raft log and its encryption.
    pub raft: SwarmRaft,
    /// FIPS mode (`cluster.fips`; None: store not read).
    pub fips: Option<bool>,
    /// The secrets and configs (never their data).
    pub secrets: Vec<SecretSummary>,
    /// The services.
    pub services: Vec<SwarmService>,
    /// The files of the state directory that hold keys or state, with
    /// their modes.
    pub files: Vec<SwarmFile>,
    /// A live look at a manager's port (`--probe`).
    pub probe: Option<TlsProbe>,
    /// Whether the probed manager's certificate was signed by this state
    /// directory's root CA (a signature check; None: no probe, or no
    /// chain seen).
    pub probe_chain_from_root: Option<bool>,
    /// Things noticed while reading (a torn WAL tail, an ignored spare
    /// file): not findings by themselves.
    pub notices: Vec<String>,
}

/// A root CA rotation under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmRootRotation {
    /// The new root.
    pub new_root: RootCaInfo,
    /// Whether a certificate of the new root cross-signed by the old one
    /// is there.
    pub cross_signed: bool,
}

/// A certificate as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmCert {
    /// Subject, as text.
    pub subject: String,
    /// Issuer, as text.
    pub issuer: String,
    /// Key algorithm, e.g. `ECDSA P-256`.
    pub algorithm: String,
    /// Signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// Subject alternative names.
    pub sans: Vec<String>,
    /// Serial, hex.
    pub serial: String,
    /// `sha256:<hex>` of the certificate.
    pub fingerprint: String,
    /// Whether the root CA's key signed it.
    pub issued_by_root: bool,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// `not_after - not_before`, seconds.
    pub lifetime_seconds: u64,
}

/// A node of the Swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmNode {
    /// Node id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// `manager` or `worker`.
    pub role: String,
    /// `active`, `pause` or `drain`.
    pub availability: String,
    /// `ready`, `down`, `disconnected` or `unknown`.
    pub status: String,
    /// `leader`, `reachable`, `unreachable`, or empty for a worker.
    pub manager_status: String,
    /// The node's certificate, from the store, or this node's file for
    /// the node read (the store keeps none for the first manager).
    pub cert: Option<SwarmCert>,
    /// Where `cert` came from: `store`, `file` or `none`.
    pub cert_source: String,
    /// Whether the node says it runs in FIPS mode.
    pub fips: bool,
}

/// An external CA (`--external-ca`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmExternalCa {
    /// `cfssl` (the only protocol Swarm knows) or the number.
    pub protocol: String,
    /// Its URL.
    pub url: String,
    /// The names of its options (never their values).
    pub options: Vec<String>,
    /// Whether its CA certificate is given.
    pub has_ca_cert: bool,
}

/// A join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmJoinToken {
    /// `worker` or `manager`.
    pub role: String,
    /// Its format (`SWMTKN-1`, `SWMTKN-2-1` in FIPS mode), or `unknown`.
    pub format: String,
    /// `sha256:<first 16 hex>` of the whole token (without a new line):
    /// tells two tokens apart; `printf %s "$(docker swarm join-token -q
    /// ROLE)" | sha256sum` gives the same digits.
    pub fingerprint: String,
    /// Whether the CA digest inside it is the current root's.
    pub ca_digest_matches: bool,
    /// The newest time it can have been made (RFC 3339), when the log
    /// after the snapshot shows its change; Swarm stores no issue time.
    pub changed_at: Option<String>,
    /// When the log kept does not show it changing: the earliest it can
    /// have been made (RFC 3339), the cluster's creation; its age is at
    /// most `now` minus this.
    pub made_at_or_after: Option<String>,
}

/// Autolock, as each place shows it. They agree on a healthy manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmAutolock {
    /// `swarm-node.key` is an encrypted PEM.
    pub key_file_encrypted: bool,
    /// The `raft-dek` header is wrapped under the unlock key (not NONE).
    pub data_key_wrapped: bool,
    /// `cluster.spec.encryption_config.auto_lock_managers` (None: store
    /// not read).
    pub cluster_setting: Option<bool>,
    /// The store holds a `swarm-manager` unlock key (None: not read).
    pub unlock_key_in_store: Option<bool>,
    /// Whether the unlock key given is the one in the store (None: no key
    /// given or store not read).
    pub given_key_is_current: Option<bool>,
    /// `kek-version` header: the store version when the unlock key was
    /// last set.
    pub kek_version: Option<u64>,
    /// Whether the raft data key can be read with no unlock key.
    pub data_key_readable_without_key: bool,
    /// A data key rotation is under way (`raft-dek-pending`).
    pub pending_data_key: bool,
    /// `raft-dek-needs-rotation: true`.
    pub needs_rotation: bool,
    /// Whether all the places agree.
    pub consistent: bool,
    /// Whether autolock is on (every place says so).
    pub on: bool,
}

/// How the node's TLS key is protected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmKeyProtection {
    /// The PEM type (`ENCRYPTED PRIVATE KEY`, `PRIVATE KEY`,
    /// `EC PRIVATE KEY`).
    pub pem_type: String,
    /// In words: `PKCS#8 PBES2: PBKDF2-HMAC-SHA1, 2048 iterations,
    /// AES-256-CBC`, `none`, or the legacy PEM encryption.
    pub scheme: String,
    /// The legacy RFC 1423 encryption (an MD5-based key derivation).
    pub weak: bool,
    /// Whether the unlock key given decrypted it and its public key is
    /// the certificate's (None: not checked).
    pub matches_cert: Option<bool>,
}

/// The raft log and its encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmRaft {
    /// Record encryption algorithms seen (`secretbox (XSalsa20-Poly1305)`,
    /// `fernet (AES-128-CBC + HMAC-SHA256)`, `none`).
    pub algorithms: Vec<String>,
    /// WAL segment files.
    pub wal_segments: u64,
    /// Log entries in the WAL.
    pub entries: u64,
    /// Highest index in the log.
    pub last_index: u64,
    /// The commit index (HardState).
    pub commit_index: u64,
    /// Entries after the commit index.
    pub uncommitted: u64,
    /// The newest snapshot used: index.
    pub snapshot_index: Option<u64>,
    /// Its size in bytes.
    pub snapshot_bytes: Option<u64>,
    /// `--snapshot-interval` (None: store not read).
    pub snapshot_interval: Option<u64>,
    /// `keep_old_snapshots`.
    pub keep_old_snapshots: Option<u64>,
    /// Raft members (manager addresses).
    pub members: Vec<String>,
}

/// A service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmService {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `replicated`, `global`, `replicated-job`, `global-job`.
    pub mode: String,
    /// Replicas wanted (replicated).
    pub replicas: Option<u64>,
    /// Its image.
    pub image: String,
    /// The secrets it mounts.
    pub secrets: Vec<String>,
    /// The configs it mounts.
    pub configs: Vec<String>,
    /// How many environment variables it sets (never their values).
    pub env_vars: u64,
    /// Whether it carries registry credentials.
    pub registry_auth: bool,
}

/// A file of the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmFile {
    /// Path inside the state directory.
    pub path: String,
    /// Its mode, octal (`0600`).
    pub mode: String,
    /// Its size in bytes.
    pub size: u64,
    /// The most open mode it should have (`0600`, `0700`, `0644`).
    pub expected: String,
    /// Whether group or others can read (or write) more than `expected`.
    pub too_open: bool,
}
