//! The cluster model: everything a manager knows, as one deterministic
//! state machine driven by typed commands.
//!
//! `apply` never reads the clock or randomness: every time and every
//! random value (ids, tokens, keys) is chosen by the proposer and carried
//! in the command, so every manager reaches the same state.

use std::collections::BTreeMap;
use std::fmt;

use moat_pki::{ClusterId, NodeId, Role};
use moat_tokens::JoinToken;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A secret string kept in the store: serialized in full (the store is
/// encrypted), zeroized on drop, and printed as `…` by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret value.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Cluster-wide policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Lifetime of node certificates, in seconds.
    pub cert_expiry_secs: u64,
    /// Whether managers keep their keys locked under the unlock key.
    pub autolock: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            cert_expiry_secs: moat_pki::CertExpiry::DEFAULT.duration().as_secs(),
            autolock: false,
        }
    }
}

/// The root CA material: shared by all managers, which all act as the CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaMaterial {
    /// The root certificate, PEM.
    pub root_cert_pem: String,
    /// The root private key, PKCS#8 DER in base64.
    pub root_key_pkcs8: Secret,
}

/// The two standing join tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTokens {
    /// Grants the worker role.
    pub worker: JoinToken,
    /// Grants the manager role.
    pub manager: JoinToken,
}

impl PartialEq for JoinTokens {
    fn eq(&self, other: &Self) -> bool {
        self.worker.ct_eq(&other.worker) && self.manager.ct_eq(&other.manager)
    }
}

impl Eq for JoinTokens {}

/// What the cluster knows about one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (its certificate CN).
    pub id: NodeId,
    /// Host name the node reported.
    pub hostname: String,
    /// Current role.
    pub role: Role,
    /// Cluster address (`host:port`) for managers; empty for workers.
    pub address: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Serial of the node's current certificate, hex.
    pub cert_serial: String,
    /// End of validity of that certificate, Unix seconds.
    pub cert_not_after: i64,
    /// SHA-256 of the root that issued that certificate (`sha256:hex`).
    #[serde(default)]
    pub cert_issuer: String,
    /// Whether the scheduler may use the node.
    #[serde(default)]
    pub availability: Availability,
    /// Whether the node is heartbeating, as the leader last committed it.
    #[serde(default)]
    pub ready: bool,
}

/// Scheduling availability of a node (Docker's three values).
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

/// The whole replicated cluster state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Set once by [`Command::Init`].
    pub cluster_id: Option<ClusterId>,
    /// Cluster policy.
    pub policy: Policy,
    /// Root CA material.
    pub ca: Option<CaMaterial>,
    /// Standing join tokens.
    pub join_tokens: Option<JoinTokens>,
    /// The unlock key, kept in the store while autolock is on so that every
    /// manager can re-wrap its keys after a rotation.
    pub unlock_key: Option<Secret>,
    /// Every node of the cluster.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Removed nodes, with the Unix time after which the entry can go (the
    /// expiry of their last certificate).
    pub removed: BTreeMap<NodeId, i64>,
}

/// A change to the cluster state. Commands are validated by `apply`, which
/// answers [`Response::Rejected`] rather than changing anything when a
/// command does not fit the current state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Creates the cluster (once).
    Init {
        /// The new cluster's id.
        cluster_id: ClusterId,
        /// Initial policy.
        policy: Policy,
        /// Root CA material.
        ca: CaMaterial,
        /// Initial join tokens.
        join_tokens: JoinTokens,
    },
    /// Replaces the policy.
    SetPolicy(Policy),
    /// Adds or replaces a node record.
    PutNode(NodeRecord),
    /// Removes a node and remembers it until `until` (Unix seconds).
    RemoveNode {
        /// The node.
        id: NodeId,
        /// When the removed-list entry may be dropped.
        until: i64,
    },
    /// Replaces one of the standing join tokens.
    RotateJoinToken {
        /// Which token.
        role: Role,
        /// The new token.
        token: JoinToken,
    },
    /// Sets or clears the stored unlock key.
    SetUnlockKey(Option<Secret>),
    /// Drops removed-list entries whose time has passed (`now`, Unix seconds).
    PruneRemoved {
        /// The proposer's clock.
        now: i64,
    },
    /// Admits a node that presented `token`: applied only if the token is
    /// still the standing token for the record's role (so a join racing a
    /// rotation is decided by the log order) and the node was not removed.
    AdmitNode {
        /// The new node; its role is the one the token grants.
        record: NodeRecord,
        /// The token it presented.
        token: JoinToken,
        /// The node already exists and keeps its identity.
        rejoin: bool,
    },
    /// Records a node's liveness.
    SetNodeStatus {
        /// The node.
        id: NodeId,
        /// Heartbeating or not.
        ready: bool,
    },
    /// Changes a node's labels or availability.
    UpdateNode {
        /// The node.
        id: NodeId,
        /// Labels to add or replace.
        labels_add: BTreeMap<String, String>,
        /// Label keys to drop.
        labels_rm: Vec<String>,
        /// New availability.
        availability: Option<Availability>,
    },
    /// Sets a node's role (promote, demote); the node renews its
    /// certificate to match.
    SetRole {
        /// The node.
        id: NodeId,
        /// Its new role.
        role: Role,
    },
    /// Records the certificate a node was just issued.
    RecordCert {
        /// The node.
        id: NodeId,
        /// Serial, hex.
        serial: String,
        /// End of validity, Unix seconds.
        not_after: i64,
        /// SHA-256 of the issuing root.
        issuer: String,
    },
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// The command was applied.
    #[default]
    Applied,
    /// The command did not fit the state and changed nothing.
    Rejected(String),
}

impl ClusterState {
    /// Applies `command`; deterministic.
    pub fn apply(&mut self, command: &Command) -> Response {
        match command {
            Command::Init {
                cluster_id,
                policy,
                ca,
                join_tokens,
            } => {
                if self.cluster_id.is_some() {
                    return Response::Rejected("the cluster is already initialized".into());
                }
                self.cluster_id = Some(*cluster_id);
                self.policy = policy.clone();
                self.ca = Some(ca.clone());
                self.join_tokens = Some(join_tokens.clone());
            }
            Command::SetPolicy(policy) => self.policy = policy.clone(),
            Command::PutNode(node) => {
                if self.removed.contains_key(&node.id) {
                    return Response::Rejected(format!(
                        "node {} was removed from the cluster",
                        node.id
                    ));
                }
                self.nodes.insert(node.id, node.clone());
            }
            Command::RemoveNode { id, until } => {
                self.nodes.remove(id);
                self.removed.insert(*id, *until);
            }
            Command::RotateJoinToken { role, token } => {
                let Some(tokens) = self.join_tokens.as_mut() else {
                    return Response::Rejected("the cluster is not initialized".into());
                };
                match role {
                    Role::Worker => tokens.worker = token.clone(),
                    Role::Manager => tokens.manager = token.clone(),
                }
            }
            Command::SetUnlockKey(key) => self.unlock_key = key.clone(),
            Command::PruneRemoved { now } => self.removed.retain(|_, until| *until > *now),
            Command::AdmitNode {
                record,
                token,
                rejoin,
            } => {
                let Some(tokens) = self.join_tokens.as_ref() else {
                    return Response::Rejected("the cluster is not initialized".into());
                };
                let standing = match record.role {
                    Role::Worker => &tokens.worker,
                    Role::Manager => &tokens.manager,
                };
                if !standing.ct_eq(token) {
                    return Response::Rejected(
                        "invalid join token: it was rotated, or it belongs to another role".into(),
                    );
                }
                if self.removed.contains_key(&record.id) {
                    return Response::Rejected(format!(
                        "node {} was removed from the cluster",
                        record.id
                    ));
                }
                match (self.nodes.get(&record.id), rejoin) {
                    (Some(_), false) => {
                        return Response::Rejected(format!(
                            "node id {} is already in use",
                            record.id
                        ));
                    }
                    (None, true) => {
                        return Response::Rejected(format!(
                            "node {} is not a member of this cluster, so it cannot rejoin; join without --rejoin",
                            record.id
                        ));
                    }
                    _ => {}
                }
                self.nodes.insert(record.id, record.clone());
            }
            Command::SetNodeStatus { id, ready } => match self.nodes.get_mut(id) {
                Some(node) => node.ready = *ready,
                None => return no_such_node(id),
            },
            Command::UpdateNode {
                id,
                labels_add,
                labels_rm,
                availability,
            } => match self.nodes.get_mut(id) {
                Some(node) => {
                    for key in labels_rm {
                        node.labels.remove(key);
                    }
                    node.labels
                        .extend(labels_add.iter().map(|(k, v)| (k.clone(), v.clone())));
                    if let Some(a) = availability {
                        node.availability = *a;
                    }
                }
                None => return no_such_node(id),
            },
            Command::SetRole { id, role } => match self.nodes.get_mut(id) {
                Some(node) => node.role = *role,
                None => return no_such_node(id),
            },
            Command::RecordCert {
                id,
                serial,
                not_after,
                issuer,
            } => match self.nodes.get_mut(id) {
                Some(node) => {
                    node.cert_serial = serial.clone();
                    node.cert_not_after = *not_after;
                    node.cert_issuer = issuer.clone();
                }
                None => return no_such_node(id),
            },
        }
        Response::Applied
    }

    /// The state as JSON for `moat store dump`: secrets are replaced by
    /// `"<redacted>"` (tokens by their fingerprint) unless `show_secrets`.
    pub fn to_dump_json(&self, show_secrets: bool) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if !show_secrets {
            if let Some(ca) = v.get_mut("ca").and_then(|c| c.as_object_mut()) {
                ca.insert("root_key_pkcs8".into(), "<redacted>".into());
            }
            if let (Some(tokens), Some(t)) = (
                v.get_mut("join_tokens").and_then(|t| t.as_object_mut()),
                &self.join_tokens,
            ) {
                tokens.insert(
                    "worker".into(),
                    format!("<redacted; fingerprint {}>", t.worker.fingerprint()).into(),
                );
                tokens.insert(
                    "manager".into(),
                    format!("<redacted; fingerprint {}>", t.manager.fingerprint()).into(),
                );
            }
            if self.unlock_key.is_some() {
                v["unlock_key"] = "<redacted>".into();
            }
        }
        v
    }
}

fn no_such_node(id: &NodeId) -> Response {
    Response::Rejected(format!("node {id} is not a member of this cluster"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> JoinTokens {
        JoinTokens {
            worker: JoinToken::generate(b"bundle").unwrap(),
            manager: JoinToken::generate(b"bundle").unwrap(),
        }
    }

    fn init() -> Command {
        Command::Init {
            cluster_id: ClusterId::generate(),
            policy: Policy::default(),
            ca: CaMaterial {
                root_cert_pem: "-----BEGIN CERTIFICATE-----".into(),
                root_key_pkcs8: Secret::new("CA-KEY-SECRET"),
            },
            join_tokens: tokens(),
        }
    }

    fn node(id: NodeId) -> NodeRecord {
        NodeRecord {
            id,
            hostname: "h".into(),
            role: Role::Worker,
            address: String::new(),
            labels: BTreeMap::new(),
            cert_serial: "01".into(),
            cert_not_after: 100,
            cert_issuer: String::new(),
            availability: Availability::Active,
            ready: true,
        }
    }

    #[test]
    fn apply_is_deterministic_across_replicas() {
        let a_id = NodeId::generate();
        let commands = vec![
            init(),
            Command::PutNode(node(a_id)),
            Command::RotateJoinToken {
                role: Role::Worker,
                token: JoinToken::generate(b"bundle").unwrap(),
            },
            Command::SetPolicy(Policy {
                cert_expiry_secs: 3600,
                autolock: true,
            }),
            Command::RemoveNode {
                id: a_id,
                until: 50,
            },
            Command::PruneRemoved { now: 10 },
        ];
        let (mut one, mut two) = (ClusterState::default(), ClusterState::default());
        for c in &commands {
            assert_eq!(one.apply(c), two.apply(c));
        }
        assert_eq!(one, two);
        assert!(one.nodes.is_empty());
        assert_eq!(one.removed.get(&a_id), Some(&50));
        assert_eq!(one.policy.cert_expiry_secs, 3600);
        one.apply(&Command::PruneRemoved { now: 60 });
        assert!(one.removed.is_empty());
    }

    #[test]
    fn invalid_commands_are_rejected_without_change() {
        let mut s = ClusterState::default();
        let rotate = Command::RotateJoinToken {
            role: Role::Manager,
            token: JoinToken::generate(b"x").unwrap(),
        };
        assert!(matches!(s.apply(&rotate), Response::Rejected(_)));
        assert_eq!(s, ClusterState::default());
        s.apply(&init());
        let before = s.clone();
        assert!(matches!(s.apply(&init()), Response::Rejected(_)));
        assert_eq!(s, before);
        let gone = NodeId::generate();
        s.apply(&Command::RemoveNode {
            id: gone,
            until: 99,
        });
        assert!(matches!(
            s.apply(&Command::PutNode(node(gone))),
            Response::Rejected(_)
        ));
        assert!(!s.nodes.contains_key(&gone));
    }

    #[test]
    fn dump_redacts_secrets_unless_asked() {
        let mut s = ClusterState::default();
        s.apply(&init());
        s.apply(&Command::SetUnlockKey(Some(Secret::new("UNLOCK-SECRET"))));
        let worker = s
            .join_tokens
            .as_ref()
            .unwrap()
            .worker
            .expose_secret()
            .to_string();
        let redacted = s.to_dump_json(false).to_string();
        for secret in ["CA-KEY-SECRET", "UNLOCK-SECRET", worker.as_str()] {
            assert!(!redacted.contains(secret), "{secret} leaked");
        }
        assert!(
            redacted.contains(
                &s.join_tokens
                    .as_ref()
                    .unwrap()
                    .worker
                    .fingerprint()
                    .to_string()
            )
        );
        let full = s.to_dump_json(true).to_string();
        for secret in ["CA-KEY-SECRET", "UNLOCK-SECRET", worker.as_str()] {
            assert!(
                full.contains(secret),
                "{secret} missing with --show-secrets"
            );
        }
        assert!(!format!("{s:?}").contains("CA-KEY-SECRET"), "Debug leaks");
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = ClusterState::default();
        s.apply(&init());
        s.apply(&Command::PutNode(node(NodeId::generate())));
        let back: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
