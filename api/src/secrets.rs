//! Secrets and configs on the control wire (`moat secret …`, `moat config
//! …`). Both kinds share these types; `kind` says which (`"secret"` or
//! `"config"`). A secret's data travels only into the daemon (create,
//! update), as base64 in a [`SecretString`]; it never comes back out. A
//! config's data comes back on `config inspect`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SecretString;

/// `POST /v1/secrets/create`.
#[derive(Debug, Deserialize, Serialize)]
pub struct SecretCreateRequest {
    /// `secret` or `config`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// The data, base64.
    pub data_base64: SecretString,
    /// `--label K=V`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/secrets/update`: a new version.
#[derive(Debug, Deserialize, Serialize)]
pub struct SecretUpdateRequest {
    /// `secret` or `config`.
    pub kind: String,
    /// Its name, id or a unique id prefix.
    pub secret: String,
    /// The new data, base64.
    pub data_base64: SecretString,
}

/// `POST /v1/secrets` (list) and `/v1/secrets/inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRefRequest {
    /// `secret` or `config`.
    pub kind: String,
    /// Its name, id or a unique id prefix (empty for a list).
    #[serde(default)]
    pub secret: String,
}

/// `POST /v1/secrets/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRemoveRequest {
    /// `secret` or `config`.
    pub kind: String,
    /// Names, ids or unique id prefixes.
    pub secrets: Vec<String>,
}

/// What was removed, by the names given, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRemoveResponse {
    /// Removed.
    pub removed: Vec<String>,
}

/// The answer to `create` and `update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretChanged {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its latest version.
    pub version: u64,
    /// The services that follow it and now roll onto this version.
    #[serde(default)]
    pub services_updated: Vec<String>,
}

/// One version, as `secret inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionInfo {
    /// Its number.
    pub version: u64,
    /// Bytes.
    pub size: u64,
    /// `hmac-sha256:…` under the cluster's audit key (`moat audit hash`
    /// gives the same for a value you hold).
    pub digest: String,
    /// RFC 3339.
    pub created_at: String,
    /// The tasks that hold it (not ended).
    pub tasks: Vec<String>,
}

/// One secret or config, as `ls` and `inspect` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    /// Its id.
    pub id: String,
    /// `secret` or `config`.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, of the latest version.
    pub updated_at: String,
    /// The latest version's number.
    pub version: u64,
    /// The versions kept, oldest first.
    pub versions: Vec<SecretVersionInfo>,
    /// The services whose spec uses it.
    pub used_by: Vec<String>,
    /// A config's latest data, base64, on `config inspect`; never for a
    /// secret.
    #[serde(default)]
    pub data_base64: Option<String>,
}

/// A service's use of a secret or config, as `service inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUse {
    /// `secret` or `config`.
    pub kind: String,
    /// The secret's name.
    pub name: String,
    /// The version its tasks get.
    pub version: u64,
    /// Whether the version was pinned (`NAME@VERSION`).
    pub pinned: bool,
    /// The file name the task sees.
    pub target: String,
    /// The file's mode, octal (`0400`).
    pub mode: String,
}
