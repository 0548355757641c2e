//! moat's control API: how the `moat` CLI talks to a `moat daemon`.
//!
//! moat-api owns:
//!
//! * the wire types, HTTP+JSON over the daemon's unix socket, under
//!   versioned paths (`/v1/…`, see [`path`]);
//! * the error body every failure carries ([`ApiError`]: a message, the
//!   next step for the operator, and a machine-readable [`ErrorKind`]);
//! * [`Client`], which speaks that protocol over a unix socket.
//! * [`validate_hostname`], the one check of a node's host name that the
//!   CLI and the daemon (at start, and a manager admitting a join) share.
//!
//! It holds no business logic: the daemon (moat-node) decides, the CLI
//! (moat) formats. The socket is the only authentication (mode 0600, owned
//! by the daemon's user), so the API never carries credentials of its own.
//! Secrets travel on it only when the operator asks for them (a join token
//! from `moat join-token`, a token given to `moat join`).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod audit;
mod client;
mod hostname;
mod secret;
mod secrets;
mod services;
mod swarm;
mod tls_probe;
mod types;

pub use audit::*;
pub use client::{Client, ClientError, DEFAULT_SOCKET, Host};
pub use hostname::{InvalidHostname, MAX_HOSTNAME_LABEL_LEN, MAX_HOSTNAME_LEN, validate_hostname};
pub use secret::SecretString;
pub use secrets::*;
pub use services::*;
pub use swarm::*;
pub use tls_probe::*;
pub use types::*;

/// The versioned request paths.
pub mod path {
    /// `GET`: [`crate::Info`].
    pub const INFO: &str = "/v1/info";
    /// `POST` [`crate::InitRequest`] → [`crate::InitResponse`].
    pub const INIT: &str = "/v1/init";
    /// `POST` [`crate::JoinRequest`] → [`crate::JoinResponse`].
    pub const JOIN: &str = "/v1/join";
    /// `POST` [`crate::LeaveRequest`] → `{}`.
    pub const LEAVE: &str = "/v1/leave";
    /// `POST` [`crate::JoinTokenRequest`] → [`crate::JoinTokenResponse`].
    pub const JOIN_TOKEN: &str = "/v1/join-token";
    /// `POST` [`crate::CreateTokenRequest`] → [`crate::CreateTokenResponse`].
    pub const JOIN_TOKEN_CREATE: &str = "/v1/join-tokens/create";
    /// `GET` → `Vec<`[`crate::TokenSummary`]`>`.
    pub const JOIN_TOKENS: &str = "/v1/join-tokens";
    /// `POST` [`crate::TokenRef`] → [`crate::TokenRef`] (the full id).
    pub const JOIN_TOKEN_REVOKE: &str = "/v1/join-tokens/revoke";
    /// `GET` → `Vec<`[`crate::NodeInfo`]`>`.
    pub const NODES: &str = "/v1/nodes";
    /// `POST` [`crate::NodeRef`] → [`crate::NodeInfo`].
    pub const NODE_INSPECT: &str = "/v1/nodes/inspect";
    /// `POST` [`crate::RoleChangeRequest`] → [`crate::RoleChangeResponse`].
    pub const NODE_ROLE: &str = "/v1/nodes/role";
    /// `POST` [`crate::NodeRemoveRequest`] → [`crate::NodeRemoveResponse`].
    pub const NODE_REMOVE: &str = "/v1/nodes/remove";
    /// `POST` [`crate::NodeUpdateRequest`] → [`crate::NodeInfo`].
    pub const NODE_UPDATE: &str = "/v1/nodes/update";
    /// `POST` [`crate::UpdateRequest`] → [`crate::UpdateResponse`].
    pub const UPDATE: &str = "/v1/update";
    /// `POST` [`crate::UnlockRequest`] → [`crate::UnlockResponse`]; the
    /// only call besides `info` a locked node answers.
    pub const UNLOCK: &str = "/v1/unlock";
    /// `GET` → [`crate::UnlockKeyResponse`].
    pub const UNLOCK_KEY: &str = "/v1/unlock-key";
    /// `POST` `{}` → [`crate::UnlockKeyResponse`] (the new key).
    pub const UNLOCK_KEY_ROTATE: &str = "/v1/unlock-key/rotate";
    /// `POST` [`crate::BackupRequest`] → the backup file's bytes
    /// (`application/octet-stream`, see moat-backup).
    pub const BACKUP: &str = "/v1/backup";
    /// `POST`: [`crate::AuditRecordsRequest`] → [`crate::AuditRecordsResponse`].
    pub const AUDIT_RECORDS: &str = "/v1/audit/records";
    /// `POST`: [`crate::AuditExportRequest`] → a one-file audit bundle.
    pub const AUDIT_EXPORT: &str = "/v1/audit/export";
    /// `POST`: [`crate::AuditProveRequest`] → an inclusion proof file.
    pub const AUDIT_PROVE: &str = "/v1/audit/prove";
    /// `POST`: [`crate::AuditHashRequest`] → [`crate::AuditHashResponse`].
    pub const AUDIT_HASH: &str = "/v1/audit/hash";
    /// `GET`: [`crate::CryptoInventory`].
    pub const AUDIT_REPORT: &str = "/v1/audit/report";
    /// `GET`: [`crate::CaInfo`].
    pub const CA: &str = "/v1/ca";
    /// `POST`: [`crate::CaRotateRequest`] → [`crate::CaInfo`].
    pub const CA_ROTATE: &str = "/v1/ca/rotate";
    /// `POST`: [`crate::Empty`] → [`crate::CaInfo`].
    pub const CA_ROLLBACK: &str = "/v1/ca/rollback";
    /// `GET`: `Vec<`[`crate::ServiceInfo`]`>`.
    pub const SERVICES: &str = "/v1/services";
    /// `POST` [`crate::ServiceCreateRequest`] → [`crate::ServiceChanged`].
    pub const SERVICE_CREATE: &str = "/v1/services/create";
    /// `POST` [`crate::ServiceRef`] → [`crate::ServiceInfo`].
    pub const SERVICE_INSPECT: &str = "/v1/services/inspect";
    /// `POST` [`crate::ServiceRef`] → `Vec<`[`crate::TaskInfo`]`>`.
    pub const SERVICE_PS: &str = "/v1/services/ps";
    /// `POST` [`crate::ServiceScaleRequest`] → `Vec<`[`crate::ServiceChanged`]`>`.
    pub const SERVICE_SCALE: &str = "/v1/services/scale";
    /// `POST` [`crate::ServiceUpdateRequest`] → [`crate::ServiceChanged`].
    pub const SERVICE_UPDATE: &str = "/v1/services/update";
    /// `POST` [`crate::ServiceRef`] → [`crate::ServiceChanged`].
    pub const SERVICE_ROLLBACK: &str = "/v1/services/rollback";
    /// `POST` [`crate::ServiceRemoveRequest`] → [`crate::ServiceRemoveResponse`].
    pub const SERVICE_REMOVE: &str = "/v1/services/remove";
    /// `POST` [`crate::ServiceLogsRequest`] → `Vec<`[`crate::TaskLog`]`>`.
    pub const SERVICE_LOGS: &str = "/v1/services/logs";
    /// `POST` [`crate::NodeRef`] → `Vec<`[`crate::TaskInfo`]`>`.
    pub const NODE_PS: &str = "/v1/nodes/ps";
    /// `POST` [`crate::SecretRefRequest`] (kind only) → `Vec<`[`crate::SecretInfo`]`>`.
    pub const SECRETS: &str = "/v1/secrets";
    /// `POST` [`crate::SecretCreateRequest`] → [`crate::SecretChanged`].
    pub const SECRET_CREATE: &str = "/v1/secrets/create";
    /// `POST` [`crate::SecretUpdateRequest`] → [`crate::SecretChanged`].
    pub const SECRET_UPDATE: &str = "/v1/secrets/update";
    /// `POST` [`crate::SecretRefRequest`] → [`crate::SecretInfo`].
    pub const SECRET_INSPECT: &str = "/v1/secrets/inspect";
    /// `POST` [`crate::SecretRemoveRequest`] → [`crate::SecretRemoveResponse`].
    pub const SECRET_REMOVE: &str = "/v1/secrets/remove";
}
