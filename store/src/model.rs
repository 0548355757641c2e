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
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret string kept in the store: serialized in full (the store is
/// encrypted), zeroized on drop, and printed as `…` by `Debug`.
///
/// No `PartialEq`: compare with [`Secret::ct_eq`], in constant time.
/// `Clone` because applying a command copies its secret into the state.
#[derive(Clone)]
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

    /// Compares the secret with `other` in constant time (for a given
    /// length: the lengths themselves are not hidden).
    pub fn ct_eq(&self, other: &Secret) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
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
    /// Lifetime of the two standing join tokens, seconds; rotated by the
    /// leader when it passes. `None`: they live until rotated by hand.
    #[serde(default)]
    pub token_ttl_secs: Option<u64>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            cert_expiry_secs: moat_pki::CertExpiry::DEFAULT.duration().as_secs(),
            autolock: false,
            token_ttl_secs: None,
        }
    }
}

/// The root CA material: shared by all managers, which all act as the CA.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// When the worker token was made (Unix seconds; 0 if unknown).
    #[serde(default)]
    pub worker_issued_at: i64,
    /// When the manager token was made (Unix seconds; 0 if unknown).
    #[serde(default)]
    pub manager_issued_at: i64,
}

impl JoinTokens {
    /// The standing token for `role` and when it was made.
    pub fn standing(&self, role: Role) -> (&JoinToken, i64) {
        match role {
            Role::Worker => (&self.worker, self.worker_issued_at),
            Role::Manager => (&self.manager, self.manager_issued_at),
        }
    }
}

/// An extra join token with limits (`moat join-token create`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScopedToken {
    /// The token (secret).
    pub token: JoinToken,
    /// The role it grants.
    pub role: Role,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// Who made it.
    pub created_by: String,
    /// When it stops working (Unix seconds), if ever.
    pub expires_at: Option<i64>,
    /// Joins it still allows, if limited.
    pub uses_left: Option<u32>,
    /// Labels every node joining with it receives.
    pub labels: BTreeMap<String, String>,
    /// What it is for.
    pub description: String,
}

impl PartialEq for ScopedToken {
    fn eq(&self, other: &Self) -> bool {
        self.token.ct_eq(&other.token)
            && (
                self.role,
                self.created_at,
                &self.created_by,
                self.expires_at,
                self.uses_left,
            ) == (
                other.role,
                other.created_at,
                &other.created_by,
                other.expires_at,
                other.uses_left,
            )
            && (&self.labels, &self.description) == (&other.labels, &other.description)
    }
}

impl Eq for ScopedToken {}

/// Why a token was refused, as `apply` and the join path word it. The
/// prefixes are stable: callers classify refusals by them.
pub mod refusal {
    /// The token is not a current token of the cluster.
    pub const INVALID: &str = "invalid join token";
    /// A scoped token with no uses left.
    pub const USED_UP: &str = "join token has been used up";
    /// A token past its lifetime.
    pub const EXPIRED: &str = "join token expired at";
}

/// How a presented token matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMatch {
    /// One of the two standing tokens.
    Standing(Role),
    /// A scoped token, by its id (fingerprint).
    Scoped(Role),
}

impl TokenMatch {
    /// The role the token grants.
    pub fn role(self) -> Role {
        match self {
            TokenMatch::Standing(r) | TokenMatch::Scoped(r) => r,
        }
    }
}

impl ClusterState {
    /// Checks `token` at time `now` (Unix seconds): which token it is and
    /// whether it may still be used. Constant-time comparisons; the error
    /// starts with one of the [`refusal`] prefixes.
    pub fn check_token(&self, token: &JoinToken, now: i64) -> Result<TokenMatch, String> {
        let tokens = self
            .join_tokens
            .as_ref()
            .ok_or_else(|| "the cluster is not initialized".to_string())?;
        for role in [Role::Worker, Role::Manager] {
            let (standing, issued_at) = tokens.standing(role);
            if standing.ct_eq(token) {
                if let Some(ttl) = self.policy.token_ttl_secs
                    && issued_at > 0
                {
                    let expires = issued_at.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
                    if expires <= now {
                        return Err(format!("{} {}", refusal::EXPIRED, rfc3339(expires)));
                    }
                }
                return Ok(TokenMatch::Standing(role));
            }
        }
        let id = token.fingerprint().to_string();
        match self.scoped_tokens.get(&id) {
            Some(scoped) if scoped.token.ct_eq(token) => {
                if let Some(expires) = scoped.expires_at
                    && expires <= now
                {
                    return Err(format!("{} {}", refusal::EXPIRED, rfc3339(expires)));
                }
                if scoped.uses_left == Some(0) {
                    return Err(refusal::USED_UP.to_string());
                }
                Ok(TokenMatch::Scoped(scoped.role))
            }
            _ => Err(format!(
                "{}: it is not a current token of this cluster (it was rotated, revoked or mistyped)",
                refusal::INVALID
            )),
        }
    }
}

/// RFC 3339 for a Unix time (the number itself if it is out of range),
/// for messages and reports.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Generation of the autolock setting: grows by one each time autolock
    /// is turned on or off or the unlock key is rotated, so a manager can
    /// tell a newer setting from a stale view of an older one.
    #[serde(default)]
    pub unlock_key_version: u32,
    /// When the current unlock key was set (Unix seconds; 0 if none).
    #[serde(default)]
    pub unlock_key_set_at: i64,
    /// Every node of the cluster.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Removed nodes, with the Unix time after which the entry can go (the
    /// expiry of their last certificate).
    pub removed: BTreeMap<NodeId, i64>,
    /// Extra join tokens with limits, by id (the token's fingerprint).
    #[serde(default)]
    pub scoped_tokens: BTreeMap<String, ScopedToken>,
    /// Managers cut off by a forced new cluster: refused for good (they
    /// hold the CA key in their own stores and could issue themselves
    /// certificates long after the removed-list entry would expire).
    #[serde(default)]
    pub evicted: std::collections::BTreeSet<NodeId>,
    /// The audit log: records and signed tree heads.
    #[serde(default)]
    pub audit: crate::audit::AuditTrail,
    /// What the compliance report needs to know of each node's current
    /// certificate beyond its record.
    #[serde(default)]
    pub certs: BTreeMap<NodeId, CertInfo>,
    /// A root CA rotation under way.
    #[serde(default)]
    pub ca_rotation: Option<CaRotation>,
    /// Root CA rotations completed.
    #[serde(default)]
    pub ca_generation: u64,
    /// Roots replaced by rotations, oldest first (PEM): audit tree heads
    /// signed under them stay checkable.
    #[serde(default)]
    pub retired_roots: Vec<String>,
    /// The last [`MAX_RECENT_PROPOSALS`] [`Command::Once`] ids applied,
    /// oldest first, with their responses: a proposal sent again (a
    /// retry after a timeout) is answered, not applied twice.
    #[serde(default)]
    pub recent_proposals: std::collections::VecDeque<(u128, Response)>,
    /// Manager certificates revoked by a demotion (serial, hex), with the
    /// Unix time they expire: refused for every manager power (Raft,
    /// manager calls) though they are still valid. Pruned with the removed
    /// list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revoked_serials: BTreeMap<String, i64>,
    /// Services and their tasks (the orchestrator's part of the state).
    #[serde(default, skip_serializing_if = "no_services")]
    pub orchestrator: moat_orchestrator::State,
}

/// Whether the orchestrator's part of the state is empty: a cluster that
/// never ran a service nor kept a secret writes the same snapshots as
/// before.
fn no_services(s: &moat_orchestrator::State) -> bool {
    s.services.is_empty() && s.tasks.is_empty() && s.secrets.is_empty()
}

/// How many [`Command::Once`] ids the state remembers.
pub const MAX_RECENT_PROPOSALS: usize = 1024;

/// A root CA rotation under way (see `docs/runbooks/rotate-the-ca.md`).
///
/// While it lasts, nodes trust the old and the new root, the CA issues
/// from the new root with `cross_signed_pem` (the new root's key certified
/// by the old root) in every chain, and every node renews. When every
/// node holds a certificate from the new root (or the rotation is forced),
/// the leader finishes it: the new root becomes the CA, the old one is
/// dropped, and the join tokens are replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaRotation {
    /// Which rotation (`ca_generation + 1` when it started).
    pub id: u64,
    /// The new root.
    pub new_ca: CaMaterial,
    /// The new root cross-signed by the old one, PEM.
    pub cross_signed_pem: String,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// Finish without waiting for nodes that have not renewed.
    pub force: bool,
    /// The operator supplied the new root.
    pub external: bool,
}

impl ClusterState {
    /// The root that issues certificates now (the new one during a
    /// rotation) and the intermediate to send with them.
    pub fn issuing_ca(&self) -> Option<(&CaMaterial, Option<&str>)> {
        match &self.ca_rotation {
            Some(r) => Some((&r.new_ca, Some(r.cross_signed_pem.as_str()))),
            None => self.ca.as_ref().map(|c| (c, None)),
        }
    }

    /// The roots every node should trust now, PEM: the CA's, plus the
    /// new one during a rotation.
    pub fn trusted_roots_pem(&self) -> Option<String> {
        let ca = self.ca.as_ref()?;
        Some(match &self.ca_rotation {
            Some(r) => format!("{}{}", ca.root_cert_pem, r.new_ca.root_cert_pem),
            None => ca.root_cert_pem.clone(),
        })
    }
}

/// A node certificate's key algorithm and start of validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    /// Key algorithm and size or curve, e.g. `ECDSA P-256`.
    pub algorithm: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
}

impl ClusterState {
    /// Whether `id` was removed from the cluster (or evicted from it).
    pub fn is_removed(&self, id: &NodeId) -> bool {
        self.removed.contains_key(id) || self.evicted.contains(id)
    }

    /// Whether the certificate with `serial` (hex) was revoked (a demoted
    /// manager's).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.revoked_serials.contains_key(serial)
    }
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
        /// When it was made (Unix seconds).
        #[serde(default)]
        issued_at: i64,
    },
    /// Sets or clears the stored unlock key.
    SetUnlockKey(Option<Secret>),
    /// Turns autolock on with `key` (`Some`) or off (`None`), policy and
    /// key together. Turning it on while it is on is a rotation: the key
    /// is replaced and its generation grows.
    SetAutolock {
        /// The new unlock key (its text form), or `None` to turn autolock off.
        key: Option<Secret>,
        /// The proposer's clock (Unix seconds).
        now: i64,
    },
    /// After a forced new cluster: every manager but `keep` goes on the
    /// removed list (until `until`, Unix seconds) so that, should one come
    /// back, it is refused; the node records stay, marked not ready, for
    /// people to see and remove.
    EvictManagers {
        /// The manager the new cluster runs on.
        keep: NodeId,
        /// When the removed-list entries may be dropped.
        until: i64,
    },
    /// Replaces the unlock key; rejected while autolock is off.
    RotateUnlockKey {
        /// The new unlock key (its text form).
        key: Secret,
        /// The proposer's clock (Unix seconds).
        now: i64,
    },
    /// Drops removed-list entries whose time has passed (`now`, Unix seconds).
    PruneRemoved {
        /// The proposer's clock.
        now: i64,
    },
    /// Admits a node that presented `token`: applied only if the token is,
    /// at `now`, a standing or scoped token for the record's role with uses
    /// left (so a join racing a rotation, a revocation or another join on
    /// the last use is decided by the log order) and the node was not
    /// removed. A scoped token's use is counted and its labels given.
    AdmitNode {
        /// The new node; its role is the one the token grants.
        record: NodeRecord,
        /// The token it presented.
        token: JoinToken,
        /// The node already exists and keeps its identity.
        rejoin: bool,
        /// The proposer's clock (Unix seconds), for token lifetimes.
        #[serde(default)]
        now: i64,
    },
    /// Adds a scoped join token.
    CreateToken(ScopedToken),
    /// Removes a scoped join token (by id).
    RevokeToken {
        /// The token's id.
        id: String,
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
        /// Key algorithm and start of validity, when known.
        #[serde(default)]
        info: Option<CertInfo>,
    },
    /// Applies `command` once, whatever number of times this entry is
    /// proposed under the same `id` (a forwarded proposal retried after a
    /// timeout): a repeat gets the first one's response.
    Once {
        /// A random id chosen by the proposer.
        id: u128,
        /// The command.
        command: Box<Command>,
    },
    /// Starts a root CA rotation.
    StartCaRotation(CaRotation),
    /// Lets the rotation `id` finish without the nodes that have not
    /// renewed.
    ForceCaRotation {
        /// The rotation.
        id: u64,
    },
    /// Ends the rotation `id`: the new root becomes the CA, scoped join
    /// tokens (which pin the old root) are dropped, the standing ones
    /// replaced.
    FinishCaRotation {
        /// The rotation.
        id: u64,
        /// New standing join tokens, pinning the new root.
        join_tokens: JoinTokens,
    },
    /// Abandons the rotation `id`: the old root stays the CA.
    RollbackCaRotation {
        /// The rotation.
        id: u64,
    },
    /// Records a security event in the audit log.
    Audit {
        /// When it happened, by the proposer's clock (Unix seconds).
        time: i64,
        /// What happened.
        event: moat_audit::Event,
    },
    /// Applies `change` and records `event` in the same entry, so the
    /// change is never committed without its record. If `change` is
    /// rejected, the event is recorded as failed with the reason.
    Audited {
        /// The change.
        change: Box<Command>,
        /// When it was made, by the proposer's clock (Unix seconds).
        time: i64,
        /// The event that records it (its outcome is success).
        event: moat_audit::Event,
    },
    /// Keeps a signed tree head over the audit log.
    AuditHead(moat_audit::SignedTreeHead),
    /// Sets the cluster's audit key (once).
    SetAuditKey(Secret),
    /// Records events from a node's local journal, skipping those already
    /// forwarded.
    AuditForward {
        /// The node whose journal they come from.
        node: NodeId,
        /// The events, in journal order.
        events: Vec<crate::audit::ForwardedEvent>,
        /// The proposer's clock (Unix seconds): the time of the records
        /// and the day whose budget they count against. 0 in entries
        /// written before forwarded events were checked.
        #[serde(default)]
        now: i64,
    },
    /// Marks the audit records below `below` as archived (decision D48),
    /// proposed inside `Audited` with the `audit.archive` record.
    AuditArchive(crate::audit::ArchiveMark),
    /// Changes services and tasks (see moat-orchestrator): made by an
    /// operator's `moat service …`, by the leader's reconciler, or by a
    /// node reporting its tasks' states.
    Orchestrate(Box<moat_orchestrator::Command>),
    /// Several commands in one entry, made by the leader's proposer
    /// ([`crate::Proposer`], decision D47) from proposals that were waiting
    /// together. Each is applied in order exactly as it would be alone,
    /// with its own response and its own audit records (D29 holds per
    /// command); one rejected changes nothing of the others. Only an
    /// entry's own command may be a batch: a batch inside a batch, a
    /// `Once` or an `Audited` is rejected. At most
    /// [`MAX_BATCH_COMMANDS`] commands, checked as it is decoded.
    Batch(#[serde(deserialize_with = "bounded_batch")] Vec<Command>),
}

/// Most commands a [`Command::Batch`] holds: a longer one is refused as it
/// is decoded, before its members are allocated. The leader's proposer
/// makes batches of at most this many (1,024 by default).
pub const MAX_BATCH_COMMANDS: usize = 4096;

/// Decodes a batch's commands, refusing more than [`MAX_BATCH_COMMANDS`].
fn bounded_batch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Command>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Command>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {MAX_BATCH_COMMANDS} commands")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut commands = Vec::new();
            while let Some(command) = seq.next_element()? {
                if commands.len() == MAX_BATCH_COMMANDS {
                    return Err(serde::de::Error::invalid_length(
                        MAX_BATCH_COMMANDS + 1,
                        &self,
                    ));
                }
                commands.push(command);
            }
            Ok(commands)
        }
    }
    d.deserialize_seq(Bounded)
}

impl Command {
    /// An orchestrator command (boxed: it is far larger than the rest).
    pub fn orchestrate(command: moat_orchestrator::Command) -> Self {
        Command::Orchestrate(Box::new(command))
    }
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Response {
    /// The command was applied.
    #[default]
    Applied,
    /// The command did not fit the state and changed nothing.
    Rejected(String),
    /// The responses of a [`Command::Batch`]'s commands, in its order.
    Batch(Vec<Response>),
}

impl ClusterState {
    /// Applies `command`, the command of one entry; deterministic.
    pub fn apply(&mut self, command: &Command) -> Response {
        match command {
            Command::Batch(commands) => {
                Response::Batch(commands.iter().map(|c| self.apply_one(c)).collect())
            }
            command => self.apply_one(command),
        }
    }

    /// Applies one command that is not an entry's batch (a batch's
    /// member, a `Once`'s or an `Audited`'s): a batch here is rejected.
    fn apply_one(&mut self, command: &Command) -> Response {
        match command {
            Command::Batch(_) => {
                return Response::Rejected(
                    "a batch of commands cannot be inside another command".into(),
                );
            }
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
                if self.is_removed(&node.id) {
                    return Response::Rejected(format!(
                        "node {} was removed from the cluster",
                        node.id
                    ));
                }
                self.nodes.insert(node.id, node.clone());
            }
            Command::RemoveNode { id, until } => {
                self.nodes.remove(id);
                self.certs.remove(id);
                self.removed.insert(*id, *until);
            }
            Command::RotateJoinToken {
                role,
                token,
                issued_at,
            } => {
                let Some(tokens) = self.join_tokens.as_mut() else {
                    return Response::Rejected("the cluster is not initialized".into());
                };
                match role {
                    Role::Worker => {
                        tokens.worker = token.clone();
                        tokens.worker_issued_at = *issued_at;
                    }
                    Role::Manager => {
                        tokens.manager = token.clone();
                        tokens.manager_issued_at = *issued_at;
                    }
                }
            }
            Command::CreateToken(scoped) => {
                let id = scoped.token.fingerprint().to_string();
                if self.scoped_tokens.contains_key(&id) {
                    return Response::Rejected(format!("join token {id} already exists"));
                }
                self.scoped_tokens.insert(id, scoped.clone());
            }
            Command::RevokeToken { id } => {
                if self.scoped_tokens.remove(id).is_none() {
                    return Response::Rejected(format!("no join token {id}"));
                }
            }
            Command::SetUnlockKey(key) => self.unlock_key = key.clone(),
            Command::SetAutolock { key, now } => {
                self.policy.autolock = key.is_some();
                self.unlock_key_version = self.unlock_key_version.saturating_add(1);
                self.unlock_key = key.clone();
                self.unlock_key_set_at = if key.is_some() { *now } else { 0 };
            }
            Command::EvictManagers { keep, until } => {
                for node in self.nodes.values_mut() {
                    if node.role == Role::Manager && node.id != *keep {
                        node.ready = false;
                        self.removed.insert(node.id, *until);
                        self.evicted.insert(node.id);
                    }
                }
            }
            Command::RotateUnlockKey { key, now } => {
                if !self.policy.autolock || self.unlock_key.is_none() {
                    return Response::Rejected(
                        "autolock is off: there is no unlock key to rotate".into(),
                    );
                }
                self.unlock_key = Some(key.clone());
                self.unlock_key_version = self.unlock_key_version.saturating_add(1);
                self.unlock_key_set_at = *now;
            }
            Command::PruneRemoved { now } => {
                self.removed.retain(|_, until| *until > *now);
                self.revoked_serials.retain(|_, until| *until > *now);
            }
            Command::AdmitNode {
                record,
                token,
                rejoin,
                now,
            } => {
                // Decided here, in log order: a rotation, a revocation or the
                // last use of a scoped token that commits first wins.
                let matched = match self.check_token(token, *now) {
                    Ok(m) => m,
                    Err(why) => return Response::Rejected(why),
                };
                if matched.role() != record.role {
                    return Response::Rejected(format!(
                        "{}: it grants the {} role",
                        refusal::INVALID,
                        matched.role().as_str()
                    ));
                }
                if self.is_removed(&record.id) {
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
                let mut record = record.clone();
                if let TokenMatch::Scoped(_) = matched
                    && let Some(scoped) =
                        self.scoped_tokens.get_mut(&token.fingerprint().to_string())
                {
                    if let Some(left) = scoped.uses_left.as_mut() {
                        *left -= 1;
                    }
                    record
                        .labels
                        .extend(scoped.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                self.nodes.insert(record.id, record);
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
                Some(node) => {
                    // A demotion revokes the manager certificate at once:
                    // its holder keeps no manager power while it lasts.
                    if node.role == Role::Manager
                        && *role == Role::Worker
                        && !node.cert_serial.is_empty()
                    {
                        self.revoked_serials
                            .insert(node.cert_serial.clone(), node.cert_not_after);
                    }
                    node.role = *role;
                }
                None => return no_such_node(id),
            },
            Command::Once { id, command } => {
                if let Some((_, response)) = self.recent_proposals.iter().find(|(i, _)| i == id) {
                    return response.clone();
                }
                let response = self.apply_one(command);
                if self.recent_proposals.len() >= MAX_RECENT_PROPOSALS {
                    self.recent_proposals.pop_front();
                }
                self.recent_proposals.push_back((*id, response.clone()));
                return response;
            }
            Command::StartCaRotation(rotation) => {
                if self.ca.is_none() {
                    return Response::Rejected("the cluster is not initialized".into());
                }
                if let Some(r) = &self.ca_rotation {
                    return Response::Rejected(format!(
                        "root CA rotation {} is already under way",
                        r.id
                    ));
                }
                if rotation.id != self.ca_generation + 1 {
                    return Response::Rejected(format!(
                        "rotation {} does not follow rotation {}",
                        rotation.id, self.ca_generation
                    ));
                }
                self.ca_rotation = Some(rotation.clone());
            }
            Command::ForceCaRotation { id } => match self.ca_rotation.as_mut() {
                Some(r) if r.id == *id => r.force = true,
                _ => return Response::Rejected(format!("no root CA rotation {id} under way")),
            },
            Command::FinishCaRotation { id, join_tokens } => {
                let Some(r) = self.ca_rotation.take_if(|r| r.id == *id) else {
                    return Response::Rejected(format!("no root CA rotation {id} under way"));
                };
                if let Some(old) = self.ca.replace(r.new_ca) {
                    self.retired_roots.push(old.root_cert_pem);
                }
                self.ca_generation = r.id;
                self.join_tokens = Some(join_tokens.clone());
                self.scoped_tokens.clear();
            }
            Command::RollbackCaRotation { id } => {
                if self.ca_rotation.take_if(|r| r.id == *id).is_none() {
                    return Response::Rejected(format!("no root CA rotation {id} under way"));
                }
            }
            Command::Audit { time, event } => {
                if let Err(reason) = self.audit.append(*time, event) {
                    return Response::Rejected(format!("audit record refused: {reason}"));
                }
            }
            Command::Audited {
                change,
                time,
                event,
            } => {
                if moat_audit::Timestamp::from_unix(*time).is_err() {
                    return Response::Rejected(format!(
                        "audit record refused: time {time} is out of range"
                    ));
                }
                let response = self.apply_one(change);
                let mut event = event.clone();
                if let Response::Rejected(reason) = &response {
                    event.outcome = moat_audit::Outcome::failed(&crate::audit::record_text(reason))
                        .unwrap_or(moat_audit::Outcome::Failed {
                            reason: moat_audit::Text::default(),
                        });
                }
                if let Err(reason) = self.audit.append(*time, &event) {
                    // Cannot happen once the time is checked; never hide it.
                    tracing::error!(%reason, "an audit record could not be appended");
                }
                return response;
            }
            Command::AuditHead(head) => {
                if let Err(reason) = self.audit.add_head(head) {
                    return Response::Rejected(reason);
                }
            }
            Command::SetAuditKey(key) => {
                if let Err(reason) = self.audit.set_key(key) {
                    return Response::Rejected(reason);
                }
            }
            Command::AuditForward { node, events, now } => {
                if let Err(reason) = self.audit.forward(*node, events, *now) {
                    return Response::Rejected(format!("audit record refused: {reason}"));
                }
            }
            Command::AuditArchive(mark) => {
                if let Err(reason) = self.audit.archive(mark) {
                    return Response::Rejected(reason);
                }
            }
            Command::Orchestrate(command) => {
                if let Err(reason) = self.orchestrator.apply(command) {
                    return Response::Rejected(reason);
                }
            }
            Command::RecordCert {
                id,
                serial,
                not_after,
                issuer,
                info,
            } => match self.nodes.get_mut(id) {
                Some(node) => {
                    node.cert_serial = serial.clone();
                    node.cert_not_after = *not_after;
                    node.cert_issuer = issuer.clone();
                    match info {
                        Some(info) => self.certs.insert(*id, info.clone()),
                        None => self.certs.remove(id),
                    };
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
            if let Some(audit) = v.get_mut("audit").and_then(|a| a.as_object_mut())
                && self.audit.key().is_some()
            {
                audit.insert("key".into(), "<redacted>".into());
            }
            if let Some(ca) = v
                .get_mut("ca_rotation")
                .and_then(|r| r.get_mut("new_ca"))
                .and_then(|c| c.as_object_mut())
            {
                ca.insert("root_key_pkcs8".into(), "<redacted>".into());
            }
            if let Some(scoped) = v.get_mut("scoped_tokens").and_then(|t| t.as_object_mut()) {
                for (id, token) in scoped.iter_mut() {
                    token["token"] = format!("<redacted; fingerprint {id}>").into();
                }
            }
            redact_task_env(&mut v);
        }
        v
    }
}

/// Services' and tasks' environment values may be secrets (passwords in
/// `--env`): a dump shows their names only. Secrets' data (not configs')
/// is replaced too.
fn redact_task_env(v: &mut serde_json::Value) {
    fn redact(env: Option<&mut serde_json::Value>) {
        if let Some(env) = env.and_then(|e| e.as_object_mut()) {
            for value in env.values_mut() {
                *value = "<redacted>".into();
            }
        }
    }
    let Some(o) = v.get_mut("orchestrator") else {
        return;
    };
    if let Some(services) = o.get_mut("services").and_then(|s| s.as_object_mut()) {
        for s in services.values_mut() {
            for spec in ["spec", "previous_spec"] {
                redact(
                    s.get_mut(spec)
                        .and_then(|x| x.get_mut("task"))
                        .and_then(|t| t.get_mut("env")),
                );
            }
        }
    }
    if let Some(tasks) = o.get_mut("tasks").and_then(|t| t.as_object_mut()) {
        for t in tasks.values_mut() {
            redact(t.get_mut("spec").and_then(|s| s.get_mut("env")));
        }
    }
    if let Some(secrets) = o.get_mut("secrets").and_then(|s| s.as_object_mut()) {
        for s in secrets.values_mut() {
            if s.get("kind").and_then(|k| k.as_str()) == Some("config") {
                continue;
            }
            let versions = s.get_mut("versions").and_then(|v| v.as_array_mut());
            for version in versions.into_iter().flatten() {
                version["data"] = "<redacted>".into();
            }
        }
    }
}

fn no_such_node(id: &NodeId) -> Response {
    Response::Rejected(format!("node {id} is not a member of this cluster"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state as JSON, secrets included. `ClusterState` has no
    /// `PartialEq` (it holds secrets, which compare only in constant
    /// time), so tests compare states in this form: every field is
    /// serialized, so it is at least as strict as a field-wise `==`.
    fn json(s: &ClusterState) -> serde_json::Value {
        serde_json::to_value(s).unwrap()
    }

    fn tokens() -> JoinTokens {
        JoinTokens {
            worker: JoinToken::generate(b"bundle").unwrap(),
            manager: JoinToken::generate(b"bundle").unwrap(),
            worker_issued_at: 1_000,
            manager_issued_at: 1_000,
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
                issued_at: 5,
            },
            Command::SetPolicy(Policy {
                cert_expiry_secs: 3600,
                autolock: true,
                token_ttl_secs: None,
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
        assert_eq!(json(&one), json(&two));
        assert!(one.nodes.is_empty());
        assert_eq!(one.removed.get(&a_id), Some(&50));
        assert_eq!(one.policy.cert_expiry_secs, 3600);
        one.apply(&Command::PruneRemoved { now: 60 });
        assert!(one.removed.is_empty());
    }

    fn scoped(uses: Option<u32>, expires_at: Option<i64>) -> ScopedToken {
        ScopedToken {
            token: JoinToken::generate(b"bundle").unwrap(),
            role: Role::Worker,
            created_at: 1_000,
            created_by: "test".into(),
            expires_at,
            uses_left: uses,
            labels: BTreeMap::from([("pool".to_string(), "gpu".to_string())]),
            description: "d".into(),
        }
    }

    fn admit(token: &JoinToken, now: i64) -> (Command, NodeId) {
        let id = NodeId::generate();
        (
            Command::AdmitNode {
                record: node(id),
                token: token.clone(),
                rejoin: false,
                now,
            },
            id,
        )
    }

    fn rejected(r: Response) -> String {
        match r {
            Response::Rejected(why) => why,
            other => panic!("not rejected: {other:?}"),
        }
    }

    #[test]
    fn scoped_tokens_count_uses_expire_and_label() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let t = scoped(Some(2), Some(2_000));
        let id = t.token.fingerprint().to_string();
        assert_eq!(s.apply(&Command::CreateToken(t.clone())), Response::Applied);
        // Two uses: the joined nodes carry the token's labels.
        for _ in 0..2 {
            let (c, node) = admit(&t.token, 1_500);
            assert_eq!(s.apply(&c), Response::Applied);
            assert_eq!(s.nodes[&node].labels["pool"], "gpu");
        }
        assert_eq!(s.scoped_tokens[&id].uses_left, Some(0));
        let (c, _) = admit(&t.token, 1_500);
        assert_eq!(rejected(s.apply(&c)), refusal::USED_UP);
        // Expiry, decided by the proposer's clock in the command.
        let late = scoped(None, Some(2_000));
        s.apply(&Command::CreateToken(late.clone()));
        let (c, _) = admit(&late.token, 2_000);
        assert!(rejected(s.apply(&c)).starts_with(refusal::EXPIRED));
        let (c, _) = admit(&late.token, 1_999);
        assert_eq!(s.apply(&c), Response::Applied);
        // Revoked: invalid, like a token never issued.
        s.apply(&Command::RevokeToken {
            id: late.token.fingerprint().to_string(),
        });
        let (c, _) = admit(&late.token, 1_999);
        assert!(rejected(s.apply(&c)).starts_with(refusal::INVALID));
        // A worker token does not admit a manager.
        let open = scoped(None, None);
        s.apply(&Command::CreateToken(open.clone()));
        let (
            Command::AdmitNode {
                mut record,
                token,
                rejoin,
                now,
            },
            _,
        ) = admit(&open.token, 1)
        else {
            unreachable!()
        };
        record.role = Role::Manager;
        let c = Command::AdmitNode {
            record,
            token,
            rejoin,
            now,
        };
        assert!(rejected(s.apply(&c)).starts_with(refusal::INVALID));
    }

    #[test]
    fn dump_redacts_scoped_token_secrets() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let t = scoped(Some(1), None);
        s.apply(&Command::CreateToken(t.clone()));
        let dump = s.to_dump_json(false).to_string();
        let secret = t.token.expose_secret().to_string();
        assert!(!dump.contains(secret.as_str()), "{dump}");
        assert!(dump.contains(&t.token.fingerprint().to_string()));
        assert!(s.to_dump_json(true).to_string().contains(secret.as_str()));
    }

    #[test]
    fn dump_shows_task_environment_names_not_values() {
        use moat_orchestrator::{Command as Orch, Service, ServiceSpec, TaskSpec};
        let mut s = ClusterState::default();
        s.apply(&init());
        let spec = ServiceSpec {
            name: "db".into(),
            task: TaskSpec {
                image: "/bin/db".into(),
                env: [("DB_PASSWORD".to_string(), "hunter2-secret".to_string())].into(),
                ..TaskSpec::default()
            },
            ..ServiceSpec::default()
        };
        let create = Orch::CreateService(Service {
            id: "S1".into(),
            spec: spec.clone(),
            previous_spec: Some(spec),
            version: 1,
            created_at: 0,
            updated_at: 0,
            update_status: None,
        });
        assert_eq!(s.apply(&Command::orchestrate(create)), Response::Applied);
        let dump = s.to_dump_json(false).to_string();
        assert!(dump.contains("DB_PASSWORD"), "{dump}");
        assert!(!dump.contains("hunter2-secret"), "{dump}");
        assert!(s.to_dump_json(true).to_string().contains("hunter2-secret"));
    }

    #[test]
    fn standing_tokens_expire_with_the_policy_ttl() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let worker = s.join_tokens.as_ref().unwrap().worker.clone();
        let (c, _) = admit(&worker, 10_000);
        assert_eq!(s.apply(&c), Response::Applied, "no TTL: no expiry");
        let mut policy = s.policy.clone();
        policy.token_ttl_secs = Some(3_600);
        s.apply(&Command::SetPolicy(policy));
        let (c, _) = admit(&worker, 1_000 + 3_599);
        assert_eq!(s.apply(&c), Response::Applied);
        let (c, _) = admit(&worker, 1_000 + 3_600);
        assert!(rejected(s.apply(&c)).starts_with(refusal::EXPIRED));
    }

    #[test]
    fn invalid_commands_are_rejected_without_change() {
        let mut s = ClusterState::default();
        let rotate = Command::RotateJoinToken {
            role: Role::Manager,
            token: JoinToken::generate(b"x").unwrap(),
            issued_at: 0,
        };
        assert!(matches!(s.apply(&rotate), Response::Rejected(_)));
        assert_eq!(json(&s), json(&ClusterState::default()));
        s.apply(&init());
        let before = s.clone();
        assert!(matches!(s.apply(&init()), Response::Rejected(_)));
        assert_eq!(json(&s), json(&before));
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
    fn evicted_managers_stay_refused_after_the_removed_list_is_pruned() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let (keep, gone, worker) = (NodeId::generate(), NodeId::generate(), NodeId::generate());
        for (id, role) in [
            (keep, Role::Manager),
            (gone, Role::Manager),
            (worker, Role::Worker),
        ] {
            s.apply(&Command::PutNode(NodeRecord {
                role,
                ready: true,
                ..node(id)
            }));
        }
        s.apply(&Command::EvictManagers { keep, until: 50 });
        assert!(s.is_removed(&gone) && !s.is_removed(&keep) && !s.is_removed(&worker));
        assert!(!s.nodes[&gone].ready, "kept for people to see, not ready");
        s.apply(&Command::PruneRemoved { now: 60 });
        assert!(!s.removed.contains_key(&gone));
        assert!(s.is_removed(&gone), "eviction outlives the removed list");
        let back = Command::PutNode(NodeRecord {
            role: Role::Manager,
            ..node(gone)
        });
        assert!(matches!(s.apply(&back), Response::Rejected(_)));
    }

    #[test]
    fn autolock_policy_and_key_change_together() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let rotate = Command::RotateUnlockKey {
            key: Secret::new("K0"),
            now: 5,
        };
        assert!(matches!(s.apply(&rotate), Response::Rejected(_)));
        assert!(s.unlock_key.is_none());
        s.apply(&Command::SetAutolock {
            key: Some(Secret::new("K1")),
            now: 10,
        });
        assert!(s.policy.autolock);
        assert_eq!(s.unlock_key.as_ref().unwrap().expose_secret(), "K1");
        assert_eq!((s.unlock_key_version, s.unlock_key_set_at), (1, 10));
        assert_eq!(
            s.apply(&Command::RotateUnlockKey {
                key: Secret::new("K2"),
                now: 20
            }),
            Response::Applied
        );
        assert_eq!(s.unlock_key.as_ref().unwrap().expose_secret(), "K2");
        assert_eq!((s.unlock_key_version, s.unlock_key_set_at), (2, 20));
        s.apply(&Command::SetAutolock { key: None, now: 30 });
        assert!(!s.policy.autolock);
        assert!(s.unlock_key.is_none());
        assert_eq!(s.unlock_key_version, 3, "every change is a new generation");
    }

    #[test]
    fn dump_hides_secret_data_but_shows_configs() {
        use moat_orchestrator::{
            Command as Orch, Secret as Stored, SecretData, SecretKind, SecretVersion,
        };
        let mut s = ClusterState::default();
        s.apply(&init());
        for (id, kind, data) in [
            ("S1", SecretKind::Secret, "DB-PASSWORD-hunter2"),
            ("C1", SecretKind::Config, "listen-port-8080"),
        ] {
            let cmd = Command::orchestrate(Orch::CreateSecret(Stored {
                id: id.into(),
                kind,
                name: format!("n{id}"),
                labels: Default::default(),
                created_at: 1,
                updated_at: 1,
                versions: vec![SecretVersion {
                    version: 1,
                    data: SecretData::new(data.as_bytes().to_vec()),
                    digest: "hmac-sha256:00".into(),
                    created_at: 1,
                }],
            }));
            assert_eq!(s.apply(&cmd), Response::Applied);
        }
        let b64 = |t: &str| {
            let json = serde_json::to_string(&SecretData::new(t.as_bytes().to_vec())).unwrap();
            json.trim_matches('"').to_owned()
        };
        let redacted = s.to_dump_json(false).to_string();
        assert!(
            !redacted.contains(&b64("DB-PASSWORD-hunter2")),
            "secret data leaked"
        );
        assert!(!redacted.contains("DB-PASSWORD-hunter2"));
        assert!(
            redacted.contains(&b64("listen-port-8080")),
            "configs are not secret"
        );
        assert!(
            s.to_dump_json(true)
                .to_string()
                .contains(&b64("DB-PASSWORD-hunter2")),
            "--show-secrets shows it"
        );
    }

    #[test]
    fn dump_redacts_secrets_unless_asked() {
        let mut s = ClusterState::default();
        s.apply(&init());
        s.apply(&Command::SetUnlockKey(Some(Secret::new("UNLOCK-SECRET"))));
        s.apply(&Command::SetAuditKey(Secret::new("AUDIT-KEY-SECRET")));
        assert!(s.audit.key().is_some());
        let worker = s
            .join_tokens
            .as_ref()
            .unwrap()
            .worker
            .expose_secret()
            .to_string();
        let redacted = s.to_dump_json(false).to_string();
        for secret in [
            "CA-KEY-SECRET",
            "UNLOCK-SECRET",
            "AUDIT-KEY-SECRET",
            worker.as_str(),
        ] {
            assert!(!redacted.contains(secret), "{secret} leaked");
        }
        assert!(
            s.to_dump_json(true)
                .to_string()
                .contains("AUDIT-KEY-SECRET"),
            "--show-secrets shows the audit key"
        );
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
        assert_eq!(json(&back), json(&s));
    }

    fn event(target: &str) -> moat_audit::Event {
        moat_audit::Event {
            node: NodeId::generate(),
            actor: moat_audit::Actor::local_user(1000),
            action: moat_audit::Action::NODE_LABEL,
            target: moat_audit::Text::new("target", target).unwrap(),
            outcome: moat_audit::Outcome::Success,
            details: moat_audit::Details::new(),
        }
    }

    /// Commands whose outcome depends on the ones before them, a rejected
    /// one, audited changes (applied and rejected) and a `Once`.
    fn interleaved() -> Vec<Command> {
        let t = scoped(None, None);
        let id = t.token.fingerprint().to_string();
        let n = NodeId::generate();
        vec![
            Command::CreateToken(t.clone()),
            Command::RevokeToken { id: id.clone() },
            Command::RevokeToken { id: id.clone() },
            Command::Audited {
                change: Box::new(Command::PutNode(node(n))),
                time: 1_700_000_000,
                event: event("node:a"),
            },
            Command::Audited {
                change: Box::new(Command::RevokeToken { id }),
                time: 1_700_000_001,
                event: event("token"),
            },
            Command::Once {
                id: 7,
                command: Box::new(Command::Audit {
                    time: 1_700_000_002,
                    event: event("once"),
                }),
            },
            Command::Once {
                id: 7,
                command: Box::new(Command::Audit {
                    time: 1_700_000_002,
                    event: event("once"),
                }),
            },
            Command::SetNodeStatus {
                id: n,
                ready: false,
            },
            Command::UpdateNode {
                id: NodeId::generate(),
                labels_add: BTreeMap::new(),
                labels_rm: Vec::new(),
                availability: None,
            },
        ]
    }

    #[test]
    fn a_batch_applies_each_command_as_it_would_alone() {
        let commands = interleaved();
        let mut single = ClusterState::default();
        single.apply(&init());
        let mut batched = single.clone();
        let alone: Vec<Response> = commands.iter().map(|c| single.apply(c)).collect();
        let Response::Batch(together) = batched.apply(&Command::Batch(commands)) else {
            panic!("a batch answers a batch");
        };
        assert_eq!(together, alone, "same responses, in order");
        assert_eq!(
            alone.iter().filter(|r| **r != Response::Applied).count(),
            3,
            "a second revoke, an audited revoke and an unknown node are refused: {alone:?}"
        );
        assert_eq!(json(&batched), json(&single), "same state");
        // The same audit records, in the same order (a change and its
        // record stay one command; the repeat of `Once` records nothing).
        assert_eq!(batched.audit.size(), 3);
        assert_eq!(batched.audit.pending(), single.audit.pending());
    }

    #[test]
    fn a_rejected_member_leaves_the_others_applied() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let (a, b) = (NodeId::generate(), NodeId::generate());
        s.apply(&Command::RemoveNode { id: b, until: 99 });
        let r = s.apply(&Command::Batch(vec![
            Command::PutNode(node(a)),
            Command::PutNode(node(b)),
            Command::SetNodeStatus {
                id: a,
                ready: false,
            },
        ]));
        let Response::Batch(r) = r else {
            panic!("{r:?}")
        };
        assert_eq!(r[0], Response::Applied);
        assert!(rejected(r[1].clone()).contains("was removed"));
        assert_eq!(r[2], Response::Applied);
        assert!(!s.nodes[&a].ready && !s.nodes.contains_key(&b));
        // An empty batch is nothing.
        let before = json(&s);
        assert_eq!(
            s.apply(&Command::Batch(Vec::new())),
            Response::Batch(Vec::new())
        );
        assert_eq!(json(&s), before);
    }

    #[test]
    fn a_batch_inside_a_command_is_refused() {
        let mut s = ClusterState::default();
        s.apply(&init());
        let inner = NodeId::generate();
        let nested = || Command::Batch(vec![Command::PutNode(node(inner))]);
        let r = s.apply(&Command::Batch(vec![
            nested(),
            Command::Once {
                id: 1,
                command: Box::new(nested()),
            },
            Command::Audited {
                change: Box::new(nested()),
                time: 1_700_000_000,
                event: event("nested"),
            },
            Command::PutNode(node(NodeId::generate())),
        ]));
        let Response::Batch(r) = r else {
            panic!("{r:?}")
        };
        for refused in &r[..3] {
            assert!(rejected(refused.clone()).contains("batch"), "{refused:?}");
        }
        assert_eq!(r[3], Response::Applied);
        assert!(!s.nodes.contains_key(&inner), "nothing nested was applied");
        // The audited one is recorded as failed, as any refused change.
        assert_eq!(s.audit.size(), 1);
        // Wrapped at the top of an entry, too.
        let once = Command::Once {
            id: 2,
            command: Box::new(nested()),
        };
        assert!(rejected(s.apply(&once)).contains("batch"));
        assert!(!s.nodes.contains_key(&inner));
    }

    #[test]
    fn a_batch_is_deterministic_and_round_trips() {
        let batch = Command::Batch(interleaved());
        let back: Command = serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
        let mut one = ClusterState::default();
        one.apply(&init());
        let mut two = one.clone();
        assert_eq!(one.apply(&batch), two.apply(&back));
        assert_eq!(json(&one), json(&two));
        let r = Response::Batch(vec![Response::Applied, Response::Rejected("no".into())]);
        let r2: Response = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(r, r2);
    }

    #[test]
    fn deeply_nested_batches_are_refused_by_the_decoder() {
        // serde_json's recursion limit: an error, not a stack overflow.
        let depth = 100_000;
        let json = format!("{}{}", "{\"Batch\":[".repeat(depth), "]}".repeat(depth));
        assert!(serde_json::from_str::<Command>(&json).is_err());
        // A few levels decode (apply refuses them, see above).
        let json = format!("{}{}", "{\"Batch\":[".repeat(4), "]}".repeat(4));
        assert!(serde_json::from_str::<Command>(&json).is_ok());
    }

    #[test]
    fn a_batch_longer_than_the_limit_is_refused_by_the_decoder() {
        let prune = r#"{"PruneRemoved":{"now":1}}"#;
        let batch = |n: usize| format!("{{\"Batch\":[{}]}}", vec![prune; n].join(","));
        let Command::Batch(ok) = serde_json::from_str(&batch(MAX_BATCH_COMMANDS)).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(ok.len(), MAX_BATCH_COMMANDS);
        let e = serde_json::from_str::<Command>(&batch(MAX_BATCH_COMMANDS + 1)).unwrap_err();
        assert!(e.to_string().contains("at most 4096 commands"), "{e}");
    }
}
