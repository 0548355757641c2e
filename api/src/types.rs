//! Request and response bodies.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SecretString;

/// What every failed request answers, with an HTTP status that matches
/// [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure, for programs.
    pub kind: ErrorKind,
    /// What went wrong, for people. Never holds a secret.
    pub message: String,
    /// The next step for the operator, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds the next step for the operator.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Failure classes of the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names something invalid (HTTP 400).
    InvalidArgument,
    /// The node is in the wrong state for this request: not in a cluster,
    /// already in one, not a manager, locked (HTTP 409).
    FailedPrecondition,
    /// What the request names does not exist (HTTP 404).
    NotFound,
    /// The cluster refused: a wrong, rotated or foreign token; this node
    /// was removed (HTTP 403).
    PermissionDenied,
    /// The cluster cannot answer now: no leader, no quorum, a manager is
    /// unreachable (HTTP 503).
    Unavailable,
    /// Anything else (HTTP 500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status code that carries this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::FailedPrecondition => 409,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the CA and holds the store.
    Manager,
    /// Holds only its identity.
    Worker,
}

impl Role {
    /// `"manager"` or `"worker"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the scheduler may use a node (Docker's three values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Available.
    #[default]
    Active,
    /// No new work.
    Pause,
    /// No work at all.
    Drain,
}

impl Availability {
    /// `"active"`, `"pause"` or `"drain"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

/// Liveness, from heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heartbeating.
    Ready,
    /// No heartbeat for longer than the bound.
    Down,
}

/// How a manager looks from the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagerStatus {
    /// The Raft leader.
    Leader,
    /// Heartbeating.
    Reachable,
    /// Not heartbeating.
    Unreachable,
}

/// The daemon's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Not part of a cluster: `init` or `join` it.
    Inactive,
    /// Part of a cluster.
    Active,
    /// Waiting for the unlock key.
    Locked,
    /// Part of a cluster but unable to take part: removed, certificate
    /// expired; [`Info::error`] says why and what to do.
    Error,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The daemon's state.
    pub state: NodeState,
    /// This node's id, once it has one.
    pub node_id: Option<String>,
    /// The host name this node reports.
    pub hostname: String,
    /// Whether this node is a manager.
    pub is_manager: bool,
    /// The cluster, once in one.
    pub cluster_id: Option<String>,
    /// Managers in the cluster (managers only; 0 otherwise).
    pub managers: usize,
    /// Nodes in the cluster (managers only; 0 otherwise).
    pub nodes: usize,
    /// Lifetime of node certificates, seconds.
    pub cert_expiry_seconds: u64,
    /// Whether autolock is on.
    pub autolock: bool,
    /// Cluster addresses of all managers this node knows.
    pub manager_addresses: Vec<String>,
    /// This node's cluster address, when it has one.
    pub node_address: Option<String>,
    /// The Raft leader's id, when known (managers only).
    pub leader: Option<String>,
    /// End of this node's certificate validity (RFC 3339).
    pub cert_not_after: Option<String>,
    /// Why the node is in the `error` state, and what to do.
    pub error: Option<String>,
    /// When the current unlock key was set (RFC 3339; autolock on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key_set_at: Option<String>,
    /// Generation of the autolock setting (grows with every change).
    #[serde(default)]
    pub unlock_key_generation: u32,
    /// A root CA rotation under way: `rotation N: k/n nodes on the new
    /// root` (managers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_rotation: Option<String>,
    /// Version of the data key this manager's store is sealed with, and
    /// the one it is rotating to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key_version: Option<u32>,
}

/// `POST /v1/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitRequest {
    /// Where to listen for cluster traffic (`host:port`).
    pub listen_addr: String,
    /// The address other nodes use to reach this one; defaults to the
    /// listen address.
    pub advertise_addr: Option<String>,
    /// Lifetime of node certificates, seconds.
    pub cert_expiry_seconds: Option<u64>,
    /// Turn autolock on.
    pub autolock: bool,
    /// Make this manager (restored from a backup, or the survivor of a
    /// lost quorum) the only manager of its cluster, keeping its state.
    #[serde(default)]
    pub force_new_cluster: bool,
}

/// Answer to `init`. The token is a [`SecretString`].
#[derive(Debug, Serialize, Deserialize)]
pub struct InitResponse {
    /// The new manager's id.
    pub node_id: String,
    /// The new cluster's id.
    pub cluster_id: String,
    /// The address workers join.
    pub advertise_addr: String,
    /// The worker join token (the operator asked for it by initializing).
    pub worker_token: SecretString,
    /// The unlock key, when initialized with autolock (shown once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<SecretString>,
}

/// `POST /v1/join`. The token is a [`SecretString`].
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The join token.
    pub token: SecretString,
    /// A manager's address (`host:port`).
    pub remote_addr: String,
    /// Where to listen for cluster traffic (managers; recorded for workers
    /// in case they are promoted).
    pub listen_addr: String,
    /// The address other nodes use; defaults to the listen address.
    pub advertise_addr: Option<String>,
    /// Keep this node's identity: after its certificate expired while it
    /// was down.
    pub rejoin: bool,
}

/// Answer to `join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// This node's id.
    pub node_id: String,
    /// The role the token granted.
    pub role: Role,
    /// A warning for the operator (the cluster now has an even number of
    /// managers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /v1/leave`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {
    /// Leave even when it loses quorum or erases the cluster.
    pub force: bool,
}

/// `POST /v1/join-token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRequest {
    /// Which token.
    pub role: Role,
    /// Replace it first.
    pub rotate: bool,
}

/// Answer to `join-token`. The token is a [`SecretString`].
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinTokenResponse {
    /// Which token.
    pub role: Role,
    /// The token.
    pub token: SecretString,
    /// The address to join (this manager's advertise address).
    pub addr: String,
    /// Whether it was just rotated.
    pub rotated: bool,
}

/// One node, as `node ls` and `node inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Host name.
    pub hostname: String,
    /// Role.
    pub role: Role,
    /// Liveness.
    pub status: NodeStatus,
    /// Scheduling availability.
    pub availability: Availability,
    /// Managers only.
    pub manager_status: Option<ManagerStatus>,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// End of the current certificate's validity (RFC 3339).
    pub cert_not_after: String,
    /// Whether this is the node answering.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Cluster address.
    pub address: String,
    /// Serial of the current certificate (hex).
    pub cert_serial: String,
    /// SHA-256 of the issuing root certificate (`sha256:hex`).
    pub cert_issuer_fingerprint: String,
}

/// Names a node: an id, a unique id prefix, or a host name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    /// The name.
    pub node: String,
}

/// `POST /v1/nodes/role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChangeRequest {
    /// The node.
    pub node: String,
    /// The new role.
    pub role: Role,
}

/// Answer to a role change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChangeResponse {
    /// The node's id.
    pub id: String,
    /// Whether the role was already the requested one.
    pub unchanged: bool,
    /// A warning for the operator (an even number of managers).
    pub warning: Option<String>,
}

/// `POST /v1/nodes/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRemoveRequest {
    /// The node.
    pub node: String,
    /// Remove a node that is still up, or a manager (demoting it first).
    pub force: bool,
}

/// Answer to `node rm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRemoveResponse {
    /// The removed node's id.
    pub id: String,
    /// The node was a manager: it held the CA key, and whoever holds its
    /// key could still sign with it (the CLI says to rotate the CA).
    #[serde(default)]
    pub was_manager: bool,
}

/// `POST /v1/nodes/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUpdateRequest {
    /// The node.
    pub node: String,
    /// Labels to add or replace.
    pub label_add: BTreeMap<String, String>,
    /// Label keys to remove.
    pub label_rm: Vec<String>,
    /// New availability.
    pub availability: Option<Availability>,
}

/// `POST /v1/join-tokens/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    /// The role it grants.
    pub role: Role,
    /// Lifetime, seconds.
    pub ttl_seconds: Option<u64>,
    /// How many joins it allows.
    pub uses: Option<u32>,
    /// Labels every node joining with it receives.
    pub labels: BTreeMap<String, String>,
    /// What it is for.
    pub description: String,
}

/// Answer to `join-token create`. The token is a [`SecretString`].
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    /// The token's id (its fingerprint, not secret).
    pub id: String,
    /// The token.
    pub token: SecretString,
    /// The address to join.
    pub addr: String,
    /// When it stops working (RFC 3339).
    pub expires_at: Option<String>,
    /// How many joins it allows.
    pub uses: Option<u32>,
}

/// One join token as `join-token ls` shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSummary {
    /// Its id (fingerprint).
    pub id: String,
    /// `"standing"` (the two Docker-style tokens) or `"scoped"`.
    pub kind: String,
    /// The role it grants.
    pub role: Role,
    /// When it was made (RFC 3339), if known.
    pub created_at: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// When it stops working (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// Joins left, if limited.
    pub uses_left: Option<u32>,
    /// What it is for.
    pub description: String,
    /// Labels joining nodes receive.
    pub labels: BTreeMap<String, String>,
}

/// Names a scoped join token by id (or a unique prefix of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRef {
    /// The id.
    pub id: String,
}

/// `POST /v1/update`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// New certificate lifetime, seconds.
    pub cert_expiry_seconds: Option<u64>,
    /// Lifetime of the two standing join tokens, seconds (0: none).
    #[serde(default)]
    pub token_ttl_seconds: Option<u64>,
    /// Autolock on or off.
    pub autolock: Option<bool>,
}

/// Answer to `update`: the cluster as it now is, and the unlock key when
/// this update turned autolock on (shown once). The key is a [`SecretString`].
#[derive(Debug, Serialize, Deserialize)]
pub struct UpdateResponse {
    /// The cluster after the update.
    #[serde(flatten)]
    pub info: Info,
    /// The new unlock key, if autolock was just turned on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<SecretString>,
}

/// `POST /v1/unlock`: the unlock key, or one share of it (see
/// `moat unlock-key --split`). Both are [`SecretString`]s.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UnlockRequest {
    /// The whole unlock key (`MOATKEY-1-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretString>,
    /// One share (`MOATSHARE-1-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<SecretString>,
}

/// Answer to `unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockResponse {
    /// Whether the node is unlocked now.
    pub unlocked: bool,
    /// Shares given so far (when unlocking with shares).
    #[serde(default)]
    pub shares_have: u8,
    /// Shares needed.
    #[serde(default)]
    pub shares_need: u8,
    /// Shares in the split.
    #[serde(default)]
    pub shares_total: u8,
    /// Something the operator should know (e.g. shares of another split
    /// were set aside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The cluster's unlock key. The key is a [`SecretString`].
#[derive(Debug, Serialize, Deserialize)]
pub struct UnlockKeyResponse {
    /// The key (`MOATKEY-1-…`).
    pub key: SecretString,
    /// Generation of the autolock setting it belongs to.
    pub generation: u32,
    /// When it was set (RFC 3339).
    pub set_at: String,
}

/// `POST /v1/backup`: how to protect the backup. The passphrase is a
/// [`SecretString`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BackupRequest {
    /// age X25519 recipients (`age1…`) to encrypt to.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A passphrase to encrypt with (age scrypt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<SecretString>,
    /// Write it unencrypted (still integrity-checked). Refused unless set.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

/// An empty JSON object, for requests and answers that carry nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_holds_a_token() {
        let secret = "MOATTKN-1-secret-part";
        let join = JoinRequest {
            token: secret.into(),
            remote_addr: "a:1".into(),
            listen_addr: "b:2".into(),
            advertise_addr: None,
            rejoin: false,
        };
        let shown = JoinTokenResponse {
            role: Role::Worker,
            token: secret.into(),
            addr: "a:1".into(),
            rotated: false,
        };
        let init = InitResponse {
            node_id: "n".into(),
            cluster_id: "c".into(),
            advertise_addr: "a:1".into(),
            worker_token: secret.into(),
            unlock_key: Some(secret.into()),
        };
        let unlock = UnlockRequest {
            key: Some(secret.into()),
            share: Some(secret.into()),
        };
        let key = UnlockKeyResponse {
            key: secret.into(),
            generation: 1,
            set_at: String::new(),
        };
        for text in [
            format!("{join:?}"),
            format!("{shown:?}"),
            format!("{init:?}"),
            format!("{unlock:?}"),
            format!("{key:?}"),
        ] {
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
