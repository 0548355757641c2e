//! Wire types of the audit log and the compliance report
//! (`moat audit …`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SecretString;

use crate::Role;

/// `POST /v1/audit/records`: a page of records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecordsRequest {
    /// First sequence number wanted (1 for the start of the log).
    #[serde(default)]
    pub since: u64,
    /// At most this many records (the daemon caps it at
    /// [`MAX_AUDIT_PAGE`]).
    #[serde(default)]
    pub limit: u64,
}

/// Most records answered by one [`AuditRecordsRequest`].
pub const MAX_AUDIT_PAGE: u64 = 10_000;

/// A page of records: canonical JSON lines, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecordsResponse {
    /// The records, each its canonical JSON text (the Merkle leaf).
    pub records: Vec<String>,
    /// Records in the log at the time of the answer.
    pub size: u64,
    /// The first record the managers keep (records before it were
    /// archived, `moat audit archive`); 0 from managers that predate
    /// archives.
    #[serde(default)]
    pub first: u64,
}

/// `POST /v1/audit/export`: the answer is a one-file bundle
/// (`application/octet-stream`, see `docs/formats/audit.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditExportRequest {
    /// First record to include (0 for all the managers keep: from the
    /// first record not archived).
    #[serde(default)]
    pub since: u64,
    /// Last record to include (0 for the log's last): with it, the bundle
    /// carries a fresh head at `until` (what `moat audit archive` writes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub until: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `POST /v1/audit/prove`: an inclusion proof file for one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditProveRequest {
    /// The record's sequence number.
    pub seq: u64,
    /// For an archived record: its canonical line, read from the archive.
    /// The manager proves it only if its leaf hash is the one it keeps for
    /// record `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
}

/// `POST` [`AUDIT_ARCHIVE_PATH`]: mark records below `below` as archived
/// (`moat audit archive`, after the archive was written and verified).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditArchiveRequest {
    /// The first record kept: records up to `below - 1` are archived.
    pub below: u64,
    /// `sha256:` and the hex SHA-256 of the archive's `archive.json`.
    pub digest: String,
    /// The Merkle root at `below - 1` (hex), from the archive's head: the
    /// manager refuses if it is not the log's.
    pub root: String,
    /// The date asked for (`--before`), RFC 3339, recorded as a detail.
    pub before: String,
}

/// The answer to [`AuditArchiveRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditArchiveResponse {
    /// The first record the managers keep now.
    pub below: u64,
    /// Records in the log (the archival's own record included).
    pub size: u64,
}

/// The control API path of [`AuditArchiveRequest`].
pub const AUDIT_ARCHIVE_PATH: &str = "/v1/audit/archive";

/// `POST /v1/audit/hash`: the keyed hash of a value, as records name
/// secrets. The value is a [`SecretString`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AuditHashRequest {
    /// The value (a join token, an unlock key…).
    pub value: SecretString,
}

/// The answer to [`AuditHashRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHashResponse {
    /// `hmac-sha256:<hex>`.
    pub hash: String,
}

/// `GET /v1/audit/report`: the cluster's crypto inventory, which
/// `moat audit report` checks against a policy and renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CryptoInventory {
    /// When the inventory was taken (RFC 3339).
    pub generated_at: String,
    /// The cluster.
    pub cluster_id: String,
    /// The manager that answered.
    pub answered_by: String,
    /// Lifetime of node certificates, seconds (the policy).
    pub cert_expiry_seconds: u64,
    /// The root CA.
    pub root_ca: RootCaInfo,
    /// Every node's certificate.
    pub nodes: Vec<NodeCrypto>,
    /// TLS between nodes.
    pub tls: TlsInfo,
    /// Join tokens (never their secrets).
    pub join_tokens: Vec<TokenCrypto>,
    /// Lifetime of the standing join tokens (seconds), if the policy sets one.
    pub token_ttl_seconds: Option<u64>,
    /// Whether autolock is on.
    pub autolock: bool,
    /// The unlock key (autolock on).
    pub unlock_key: Option<KeyAge>,
    /// The store's data encryption key on the answering manager.
    pub data_key: DataKeyInfo,
    /// The audit log.
    pub audit: AuditSummary,
    /// The services and where their tasks run.
    #[serde(default)]
    pub services: Vec<ServicePlacement>,
    /// The secrets and configs (never their data).
    #[serde(default)]
    pub secrets: Vec<SecretSummary>,
    /// The workload certificates of the tasks that are to run, as the CA
    /// issued them.
    #[serde(default)]
    pub workload_certs: Vec<WorkloadCert>,
}

/// A task's workload certificate (X.509-SVID) as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadCert {
    /// The service's name.
    pub service: String,
    /// The task's id (the certificate's subject CN).
    pub task: String,
    /// The host name of the node that holds it.
    pub node: String,
    /// `spiffe://<cluster>/service/<name>`.
    pub spiffe_id: String,
    /// Its serial (hex).
    pub serial: String,
    /// Its `NotAfter` (RFC 3339).
    pub not_after: String,
    /// `sha256:<hex>` of the root that issued it.
    pub issuer_fingerprint: String,
}

/// A secret or config as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSummary {
    /// `secret` or `config`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its latest version.
    pub version: u64,
    /// Versions kept (older ones still used by a task or a service).
    pub versions_kept: u64,
    /// Bytes of the latest version.
    pub size: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When its latest version was made (RFC 3339).
    pub updated_at: String,
    /// The services whose spec uses it.
    pub used_by: Vec<String>,
}

/// A service as the report shows it: what runs where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePlacement {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `replicated` or `global`.
    pub mode: String,
    /// `process` or `docker`.
    pub runtime: String,
    /// Image or program.
    pub image: String,
    /// Tasks wanted.
    pub desired: u64,
    /// Tasks running.
    pub running: u64,
    /// Running tasks per node host name.
    pub nodes: BTreeMap<String, u64>,
    /// The lifetime of its tasks' workload certificates (seconds), or
    /// `None` if they get no identity (`--no-identity`).
    #[serde(default)]
    pub identity_ttl_secs: Option<u64>,
}

/// The root CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCaInfo {
    /// Subject, as text.
    pub subject: String,
    /// Key algorithm and size or curve, e.g. `ECDSA P-256`.
    pub algorithm: String,
    /// Signature algorithm, e.g. `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// `sha256:<hex>` of the certificate.
    pub fingerprint: String,
    /// Serial, hex.
    pub serial: String,
    /// Start of validity (RFC 3339).
    pub not_before: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
}

/// One node's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCrypto {
    /// Node id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Role.
    pub role: Role,
    /// Heartbeating now.
    pub ready: bool,
    /// Key algorithm and size or curve, e.g. `ECDSA P-256`; empty if not
    /// recorded (a certificate issued before moat recorded it).
    pub algorithm: String,
    /// Serial, hex.
    pub serial: String,
    /// `sha256:<hex>` of the issuing root.
    pub issuer_fingerprint: String,
    /// Start of validity (RFC 3339), if recorded: the last issue or renewal.
    pub not_before: Option<String>,
    /// End of validity (RFC 3339).
    pub not_after: String,
}

/// TLS as configured between nodes (the same on every node: moat has no
/// setting to weaken it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// Protocol versions accepted, e.g. `TLSv1.3`.
    pub versions: Vec<String>,
    /// Cipher suites offered and accepted, in preference order.
    pub cipher_suites: Vec<String>,
    /// Key exchange groups.
    pub key_exchange_groups: Vec<String>,
    /// Whether both sides present certificates (always true).
    pub mutual: bool,
}

/// One join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCrypto {
    /// Its id (fingerprint).
    pub id: String,
    /// `standing` or `scoped`.
    pub kind: String,
    /// The role it grants.
    pub role: Role,
    /// When it was made (RFC 3339), if known.
    pub created_at: Option<String>,
    /// When it stops working (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// Joins left, if limited.
    pub uses_left: Option<u32>,
}

/// A key's generation and age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAge {
    /// Generation (grows with each rotation).
    pub version: u32,
    /// When it was set (RFC 3339), if known.
    pub set_at: Option<String>,
}

/// The data encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyInfo {
    /// `AES-256-GCM`.
    pub algorithm: String,
    /// Version in use.
    pub version: u32,
    /// When this version was made (RFC 3339), if known.
    pub created_at: Option<String>,
    /// The version a rotation is moving to, if one is under way.
    pub rotating_to: Option<u32>,
    /// Whether the data key is wrapped under the unlock key (autolock) or
    /// under a key file beside it.
    pub wrapped_by: String,
}

/// The audit log's size and signing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    /// Records.
    pub records: u64,
    /// Signed tree heads kept.
    pub heads: u64,
    /// The newest head's size and time (RFC 3339).
    pub last_head_size: Option<u64>,
    /// The newest head's time (RFC 3339).
    pub last_head_at: Option<String>,
    /// Bytes of the answering manager's newest store snapshot, which holds
    /// the whole state, this log included (absent before its first).
    #[serde(default)]
    pub snapshot_bytes: Option<u64>,
    /// The most a snapshot may hold: past it, managers cannot load or
    /// send it.
    #[serde(default)]
    pub snapshot_limit_bytes: Option<u64>,
}

/// `GET /v1/ca`: the root CA and any rotation under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaInfo {
    /// The root CA certificate now in charge.
    pub root: RootCaInfo,
    /// Its PEM.
    pub root_pem: String,
    /// Rotations completed.
    pub generation: u64,
    /// A rotation under way.
    pub rotation: Option<CaRotationInfo>,
}

/// A root CA rotation under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRotationInfo {
    /// Which rotation.
    pub id: u64,
    /// `reissuing` while nodes renew; `finishing` once every node has (or
    /// the rotation was forced).
    pub phase: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// The new root.
    pub new_root: RootCaInfo,
    /// The operator supplied the new root.
    pub external: bool,
    /// Finish without the nodes that have not renewed.
    pub force: bool,
    /// Nodes in the cluster.
    pub nodes_total: u64,
    /// Nodes holding a certificate from the new root.
    pub nodes_done: u64,
    /// The nodes the rotation waits for.
    pub waiting: Vec<WaitingNode>,
}

/// A node a rotation waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingNode {
    /// Node id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Heartbeating (a node that is down cannot renew until it is back).
    pub ready: bool,
}

/// `POST /v1/ca/rotate`. The key is a [`SecretString`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CaRotateRequest {
    /// New lifetime of node certificates, seconds (like `update
    /// --cert-expiry`).
    #[serde(default)]
    pub cert_expiry_seconds: Option<u64>,
    /// The operator's own root certificate, PEM.
    #[serde(default)]
    pub ca_cert_pem: Option<String>,
    /// Its private key, PKCS#8 PEM.
    #[serde(default)]
    pub ca_key_pem: Option<SecretString>,
    /// Finish a rotation under way without the nodes that have not
    /// renewed (with no rotation under way: start one that will not wait).
    #[serde(default)]
    pub force: bool,
}
