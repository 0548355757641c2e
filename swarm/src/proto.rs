//! SwarmKit's stored objects, as typed protobuf messages: the subset of
//! `api/objects.proto`, `specs.proto`, `types.proto`, `raft.proto`,
//! `snapshot.proto` (SwarmKit branch `bump_20.10`, what Docker 20.10 vendors)
//! and etcd's `raftpb.ConfChange` that the store and the compliance report
//! read.
//!
//! The structs are written by hand with `prost`'s derive (no `protoc`, no
//! build script). Field numbers and types follow the `.proto` files; fields
//! this crate does not need are left out, and `prost` skips them when
//! decoding (the JSON dump in [`crate::dump`] walks the raw bytes instead
//! and shows every field). Enums are plain `i32`, so a value this crate does
//! not know survives decoding; the constants next to each struct name the
//! known ones.
//!
//! Decoding arbitrary bytes returns an error and never panics; nesting is
//! bounded by `prost`'s recursion limit (100).
//!
//! Types that hold key material, secret data, credentials or environment
//! values have a `Debug` that prints `<redacted>` in their place, and wipe
//! those fields when dropped. Because they implement `Drop`, build them with
//! `let mut x = T::default(); x.field = …;` rather than `..Default::default()`.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroize;

/// `google.protobuf.Timestamp`: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Duration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds on top of `seconds`.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `Version`: the raft index at which an object was last written.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Version {
    /// The raft index.
    #[prost(uint64, tag = "1")]
    pub index: u64,
}

/// `Meta`: an object's version and times.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    /// Version of the object (the raft index of its last write).
    #[prost(message, optional, tag = "1")]
    pub version: Option<Version>,
    /// When the object was created.
    #[prost(message, optional, tag = "2")]
    pub created_at: Option<Timestamp>,
    /// When the object was last updated.
    #[prost(message, optional, tag = "3")]
    pub updated_at: Option<Timestamp>,
}

/// `Annotations`: a name and labels.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Annotations {
    /// The object's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// User labels.
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
}

/// `Driver`: a driver name and its options.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Driver {
    /// The driver's name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The driver's options.
    #[prost(btree_map = "string, string", tag = "2")]
    pub options: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------
// Raft log plaintexts

/// `InternalRaftRequest`: the plaintext of a normal raft entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternalRaftRequest {
    /// Request id (chosen by the proposer).
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The store actions, applied in one transaction.
    #[prost(message, repeated, tag = "2")]
    pub action: Vec<StoreAction>,
}

/// `StoreActionKind` values ([`StoreAction::action`]).
pub mod store_action_kind {
    /// Default value, invalid.
    pub const UNKNOWN: i32 = 0;
    /// Create an object (its id must be new).
    pub const CREATE: i32 = 1;
    /// Replace an existing object.
    pub const UPDATE: i32 = 2;
    /// Remove an object by id.
    pub const REMOVE: i32 = 3;
}

/// `StoreAction`: one create, update or remove of one object.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreAction {
    /// The action, see [`store_action_kind`].
    #[prost(int32, tag = "1")]
    pub action: i32,
    /// The object acted on.
    #[prost(oneof = "StoreTarget", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10")]
    pub target: Option<StoreTarget>,
}

/// The `target` oneof of [`StoreAction`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum StoreTarget {
    /// A node.
    #[prost(message, tag = "2")]
    Node(Node),
    /// A service.
    #[prost(message, tag = "3")]
    Service(Service),
    /// A task.
    #[prost(message, tag = "4")]
    Task(Task),
    /// A network.
    #[prost(message, tag = "5")]
    Network(Network),
    /// The cluster object.
    #[prost(message, tag = "6")]
    Cluster(Cluster),
    /// A secret.
    #[prost(message, tag = "7")]
    Secret(Secret),
    /// A generic resource.
    #[prost(message, tag = "8")]
    Resource(Resource),
    /// An extension.
    #[prost(message, tag = "9")]
    Extension(Extension),
    /// A config.
    #[prost(message, tag = "10")]
    Config(Config),
}

/// etcd `raftpb.ConfChange` `Type` values ([`ConfChange::change_type`]).
pub mod conf_change_type {
    /// A member was added (`ConfChangeAddNode`).
    pub const ADD_NODE: i32 = 0;
    /// A member was removed.
    pub const REMOVE_NODE: i32 = 1;
    /// A member's address was updated.
    pub const UPDATE_NODE: i32 = 2;
    /// A learner was added (not used by SwarmKit).
    pub const ADD_LEARNER_NODE: i32 = 3;
}

/// etcd `raftpb.ConfChange` (proto2): the plaintext of a ConfChange entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfChange {
    /// Change id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// See [`conf_change_type`].
    #[prost(int32, tag = "2")]
    pub change_type: i32,
    /// The raft id of the member concerned.
    #[prost(uint64, tag = "3")]
    pub node_id: u64,
    /// For SwarmKit, an encoded [`RaftMember`].
    #[prost(bytes = "vec", tag = "4")]
    pub context: Vec<u8>,
}

/// `RaftMember`: a manager in the raft group.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftMember {
    /// Raft id.
    #[prost(uint64, tag = "1")]
    pub raft_id: u64,
    /// SwarmKit node id.
    #[prost(string, tag = "2")]
    pub node_id: String,
    /// Raft address (`host:port`).
    #[prost(string, tag = "3")]
    pub addr: String,
    /// Status as last recorded.
    #[prost(message, optional, tag = "4")]
    pub status: Option<RaftMemberStatus>,
}

/// `RaftMemberStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftMemberStatus {
    /// Whether it was the leader.
    #[prost(bool, tag = "1")]
    pub leader: bool,
    /// 0 UNKNOWN, 1 UNREACHABLE, 2 REACHABLE.
    #[prost(int32, tag = "2")]
    pub reachability: i32,
    /// A message.
    #[prost(string, tag = "3")]
    pub message: String,
}

/// `Snapshot`: the plaintext of a raft snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Snapshot {
    /// Only 0 (V0) exists.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// The raft membership.
    #[prost(message, optional, tag = "2")]
    pub membership: Option<ClusterSnapshot>,
    /// The store.
    #[prost(message, optional, tag = "3")]
    pub store: Option<StoreSnapshot>,
}

/// `ClusterSnapshot`: raft membership in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterSnapshot {
    /// Current members.
    #[prost(message, repeated, tag = "1")]
    pub members: Vec<RaftMember>,
    /// Raft ids of removed members.
    #[prost(uint64, repeated, packed = "false", tag = "2")]
    pub removed: Vec<u64>,
}

/// `StoreSnapshot`: every object of the store.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreSnapshot {
    /// Nodes.
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<Node>,
    /// Services.
    #[prost(message, repeated, tag = "2")]
    pub services: Vec<Service>,
    /// Networks.
    #[prost(message, repeated, tag = "3")]
    pub networks: Vec<Network>,
    /// Tasks.
    #[prost(message, repeated, tag = "4")]
    pub tasks: Vec<Task>,
    /// Clusters (one, in practice).
    #[prost(message, repeated, tag = "5")]
    pub clusters: Vec<Cluster>,
    /// Secrets.
    #[prost(message, repeated, tag = "6")]
    pub secrets: Vec<Secret>,
    /// Generic resources.
    #[prost(message, repeated, tag = "7")]
    pub resources: Vec<Resource>,
    /// Extensions.
    #[prost(message, repeated, tag = "8")]
    pub extensions: Vec<Extension>,
    /// Configs.
    #[prost(message, repeated, tag = "9")]
    pub configs: Vec<Config>,
}

// ---------------------------------------------------------------------------
// Nodes

/// `NodeRole` values.
pub mod node_role {
    /// A worker.
    pub const WORKER: i32 = 0;
    /// A manager.
    pub const MANAGER: i32 = 1;
}

/// `Node`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Node {
    /// Node id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// What the user asked for.
    #[prost(message, optional, tag = "3")]
    pub spec: Option<NodeSpec>,
    /// What the node reported about itself.
    #[prost(message, optional, tag = "4")]
    pub description: Option<NodeDescription>,
    /// Status as seen by the dispatcher.
    #[prost(message, optional, tag = "5")]
    pub status: Option<NodeStatus>,
    /// Set for managers.
    #[prost(message, optional, tag = "6")]
    pub manager_status: Option<ManagerStatus>,
    /// The node's certificate and its issuance status.
    #[prost(message, optional, tag = "8")]
    pub certificate: Option<Certificate>,
    /// Current role, see [`node_role`].
    #[prost(int32, tag = "9")]
    pub role: i32,
    /// VXLAN UDP port.
    #[prost(uint32, tag = "11")]
    pub vxlan_udp_port: u32,
}

/// `NodeSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeSpec {
    /// Name and labels.
    #[prost(message, optional, tag = "1")]
    pub annotations: Option<Annotations>,
    /// See [`node_role`].
    #[prost(int32, tag = "2")]
    pub desired_role: i32,
    /// 0 PENDING, 1 ACCEPTED.
    #[prost(int32, tag = "3")]
    pub membership: i32,
    /// 0 ACTIVE, 1 PAUSE, 2 DRAIN.
    #[prost(int32, tag = "4")]
    pub availability: i32,
}

/// `NodeDescription`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeDescription {
    /// Hostname.
    #[prost(string, tag = "1")]
    pub hostname: String,
    /// OS and architecture.
    #[prost(message, optional, tag = "2")]
    pub platform: Option<Platform>,
    /// Engine version.
    #[prost(message, optional, tag = "4")]
    pub engine: Option<EngineDescription>,
    /// The node's view of the trust root.
    #[prost(message, optional, tag = "5")]
    pub tls_info: Option<NodeTlsInfo>,
    /// Whether the node runs in FIPS mode.
    #[prost(bool, tag = "6")]
    pub fips: bool,
}

/// `Platform`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Platform {
    /// CPU architecture.
    #[prost(string, tag = "1")]
    pub architecture: String,
    /// Operating system.
    #[prost(string, tag = "2")]
    pub os: String,
}

/// `EngineDescription` (the version only).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EngineDescription {
    /// Docker Engine version.
    #[prost(string, tag = "1")]
    pub engine_version: String,
}

/// `NodeTLSInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeTlsInfo {
    /// Trust root (PEM).
    #[prost(bytes = "vec", tag = "1")]
    pub trust_root: Vec<u8>,
    /// Issuer subject of the node's certificate (DER).
    #[prost(bytes = "vec", tag = "2")]
    pub cert_issuer_subject: Vec<u8>,
    /// Issuer public key of the node's certificate (DER).
    #[prost(bytes = "vec", tag = "3")]
    pub cert_issuer_public_key: Vec<u8>,
}

/// `NodeStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeStatus {
    /// 0 UNKNOWN, 1 DOWN, 2 READY, 3 DISCONNECTED.
    #[prost(int32, tag = "1")]
    pub state: i32,
    /// A message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The node's address as seen by the manager.
    #[prost(string, tag = "3")]
    pub addr: String,
}

/// `ManagerStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ManagerStatus {
    /// Raft id.
    #[prost(uint64, tag = "1")]
    pub raft_id: u64,
    /// Raft address.
    #[prost(string, tag = "2")]
    pub addr: String,
    /// Whether it is the leader.
    #[prost(bool, tag = "3")]
    pub leader: bool,
    /// 0 UNKNOWN, 1 UNREACHABLE, 2 REACHABLE.
    #[prost(int32, tag = "4")]
    pub reachability: i32,
}

/// `Certificate`: a node's certificate as issued by the CA.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Certificate {
    /// See [`node_role`].
    #[prost(int32, tag = "1")]
    pub role: i32,
    /// The CSR (PEM).
    #[prost(bytes = "vec", tag = "2")]
    pub csr: Vec<u8>,
    /// Issuance status.
    #[prost(message, optional, tag = "3")]
    pub status: Option<IssuanceStatus>,
    /// The certificate (PEM); empty for the first manager.
    #[prost(bytes = "vec", tag = "4")]
    pub certificate: Vec<u8>,
    /// Common name (the node id).
    #[prost(string, tag = "5")]
    pub cn: String,
}

/// `IssuanceStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IssuanceStatus {
    /// 0 UNKNOWN, 1 RENEW, 2 PENDING, 3 ISSUED, 4 FAILED, 5 ROTATE.
    #[prost(int32, tag = "1")]
    pub state: i32,
    /// Error text.
    #[prost(string, tag = "2")]
    pub err: String,
}

// ---------------------------------------------------------------------------
// Services and tasks

/// `Service`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Service {
    /// Service id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// The current spec.
    #[prost(message, optional, tag = "3")]
    pub spec: Option<ServiceSpec>,
    /// The spec before the last update (holds secrets too).
    #[prost(message, optional, tag = "6")]
    pub previous_spec: Option<ServiceSpec>,
    /// Whether removal is pending.
    #[prost(bool, tag = "7")]
    pub pending_delete: bool,
    /// Version of `spec`.
    #[prost(message, optional, tag = "10")]
    pub spec_version: Option<Version>,
    /// Version of `previous_spec`.
    #[prost(message, optional, tag = "11")]
    pub previous_spec_version: Option<Version>,
}

/// `ServiceSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceSpec {
    /// Name and labels.
    #[prost(message, optional, tag = "1")]
    pub annotations: Option<Annotations>,
    /// The task template.
    #[prost(message, optional, tag = "2")]
    pub task: Option<TaskSpec>,
    /// Replicated, global, or a job.
    #[prost(oneof = "ServiceMode", tags = "3, 4, 10, 11")]
    pub mode: Option<ServiceMode>,
}

/// The `mode` oneof of [`ServiceSpec`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ServiceMode {
    /// `replicated`: a number of replicas.
    #[prost(message, tag = "3")]
    Replicated(ReplicatedService),
    /// `global`: one task per node.
    #[prost(message, tag = "4")]
    Global(GlobalService),
    /// `replicated_job`.
    #[prost(message, tag = "10")]
    ReplicatedJob(ReplicatedJob),
    /// `global_job`.
    #[prost(message, tag = "11")]
    GlobalJob(GlobalJob),
}

/// `ReplicatedService`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplicatedService {
    /// Number of replicas.
    #[prost(uint64, tag = "1")]
    pub replicas: u64,
}

/// `GlobalService` (no fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GlobalService {}

/// `ReplicatedJob`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReplicatedJob {
    /// Maximum tasks at once.
    #[prost(uint64, tag = "1")]
    pub max_concurrent: u64,
    /// Completions wanted.
    #[prost(uint64, tag = "2")]
    pub total_completions: u64,
}

/// `GlobalJob` (no fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GlobalJob {}

/// `TaskSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskSpec {
    /// What runs.
    #[prost(oneof = "TaskRuntime", tags = "1, 8, 10")]
    pub runtime: Option<TaskRuntime>,
    /// Bumped to force an update.
    #[prost(uint64, tag = "9")]
    pub force_update: u64,
}

/// The `runtime` oneof of [`TaskSpec`].
#[derive(Clone, PartialEq, prost::Oneof)]
#[allow(clippy::large_enum_variant)] // as prost-build generates it
pub enum TaskRuntime {
    /// A container.
    #[prost(message, tag = "1")]
    Container(ContainerSpec),
    /// A network attachment.
    #[prost(message, tag = "8")]
    Attachment(NetworkAttachmentSpec),
    /// A generic runtime (plugin).
    #[prost(message, tag = "10")]
    Generic(GenericRuntimeSpec),
}

/// `NetworkAttachmentSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkAttachmentSpec {
    /// The container attached.
    #[prost(string, tag = "1")]
    pub container_id: String,
}

/// `GenericRuntimeSpec` (the kind only; the payload is not decoded).
#[derive(Clone, PartialEq, prost::Message)]
pub struct GenericRuntimeSpec {
    /// Runtime kind.
    #[prost(string, tag = "1")]
    pub kind: String,
}

/// `ContainerSpec` (the fields the report and the dump summary use).
///
/// `env` holds values users put secrets in: its `Debug` prints the
/// variable names only, and it is wiped on drop.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ContainerSpec {
    /// Image reference.
    #[prost(string, tag = "1")]
    pub image: String,
    /// Container labels.
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: BTreeMap<String, String>,
    /// Entrypoint.
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    /// Arguments.
    #[prost(string, repeated, tag = "4")]
    pub args: Vec<String>,
    /// Environment, `KEY=VALUE` (secret-bearing).
    #[prost(string, repeated, tag = "5")]
    pub env: Vec<String>,
    /// Working directory.
    #[prost(string, tag = "6")]
    pub dir: String,
    /// User.
    #[prost(string, tag = "7")]
    pub user: String,
    /// Registry credentials for the pull (secret-bearing).
    #[prost(message, optional, tag = "10")]
    pub pull_options: Option<PullOptions>,
    /// Secrets mounted into the container.
    #[prost(message, repeated, tag = "12")]
    pub secrets: Vec<SecretReference>,
    /// Hostname.
    #[prost(string, tag = "14")]
    pub hostname: String,
    /// Read-only root filesystem.
    #[prost(bool, tag = "19")]
    pub read_only: bool,
    /// Configs mounted into the container.
    #[prost(message, repeated, tag = "21")]
    pub configs: Vec<ConfigReference>,
}

impl ContainerSpec {
    /// The names of the environment variables, without their values.
    pub fn env_names(&self) -> impl Iterator<Item = &str> {
        self.env
            .iter()
            .map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k))
    }
}

impl fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<String> = self.env_names().map(|k| format!("{k}=…")).collect();
        f.debug_struct("ContainerSpec")
            .field("image", &self.image)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("env", &env)
            .field("pull_options", &self.pull_options)
            .field("secrets", &self.secrets)
            .field("configs", &self.configs)
            .finish_non_exhaustive()
    }
}

impl Drop for ContainerSpec {
    fn drop(&mut self) {
        self.env.zeroize();
    }
}

/// `ContainerSpec.PullOptions`.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct PullOptions {
    /// Base64 JSON registry credentials (secret).
    #[prost(string, tag = "64")]
    pub registry_auth: String,
}

impl fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullOptions")
            .field("registry_auth", &Redacted(self.registry_auth.len()))
            .finish()
    }
}

impl Drop for PullOptions {
    fn drop(&mut self) {
        self.registry_auth.zeroize();
    }
}

/// `SecretReference`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretReference {
    /// The secret's id.
    #[prost(string, tag = "1")]
    pub secret_id: String,
    /// The secret's name.
    #[prost(string, tag = "2")]
    pub secret_name: String,
    /// Where it is mounted.
    #[prost(message, optional, tag = "3")]
    pub file: Option<FileTarget>,
}

/// `ConfigReference`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigReference {
    /// The config's id.
    #[prost(string, tag = "1")]
    pub config_id: String,
    /// The config's name.
    #[prost(string, tag = "2")]
    pub config_name: String,
    /// Where it is mounted.
    #[prost(message, optional, tag = "3")]
    pub file: Option<FileTarget>,
}

/// `FileTarget`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileTarget {
    /// File name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Owner.
    #[prost(string, tag = "2")]
    pub uid: String,
    /// Group.
    #[prost(string, tag = "3")]
    pub gid: String,
    /// Mode bits.
    #[prost(uint32, tag = "4")]
    pub mode: u32,
}

/// `Task`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Task {
    /// Task id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// The spec (a copy of the service's, secrets included).
    #[prost(message, optional, tag = "3")]
    pub spec: Option<TaskSpec>,
    /// The service it belongs to.
    #[prost(string, tag = "4")]
    pub service_id: String,
    /// Replica slot.
    #[prost(uint64, tag = "5")]
    pub slot: u64,
    /// Node it is assigned to.
    #[prost(string, tag = "6")]
    pub node_id: String,
    /// Task annotations.
    #[prost(message, optional, tag = "7")]
    pub annotations: Option<Annotations>,
    /// The service's annotations.
    #[prost(message, optional, tag = "8")]
    pub service_annotations: Option<Annotations>,
    /// Observed status.
    #[prost(message, optional, tag = "9")]
    pub status: Option<TaskStatus>,
    /// Desired state, see [`task_state`].
    #[prost(int32, tag = "10")]
    pub desired_state: i32,
}

/// `TaskState` values (a few).
pub mod task_state {
    /// NEW.
    pub const NEW: i32 = 0;
    /// RUNNING.
    pub const RUNNING: i32 = 512;
    /// SHUTDOWN.
    pub const SHUTDOWN: i32 = 640;
}

/// `TaskStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskStatus {
    /// When this status was set.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    /// See [`task_state`].
    #[prost(int32, tag = "2")]
    pub state: i32,
    /// A message.
    #[prost(string, tag = "3")]
    pub message: String,
    /// Error text.
    #[prost(string, tag = "4")]
    pub err: String,
}

// ---------------------------------------------------------------------------
// Networks, secrets, configs, resources, extensions

/// `Network`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Network {
    /// Network id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// The spec.
    #[prost(message, optional, tag = "3")]
    pub spec: Option<NetworkSpec>,
    /// Driver state.
    #[prost(message, optional, tag = "4")]
    pub driver_state: Option<Driver>,
    /// Whether removal is pending.
    #[prost(bool, tag = "6")]
    pub pending_delete: bool,
}

/// `NetworkSpec`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkSpec {
    /// Name and labels.
    #[prost(message, optional, tag = "1")]
    pub annotations: Option<Annotations>,
    /// Driver and its options (e.g. `encrypted` for overlay).
    #[prost(message, optional, tag = "2")]
    pub driver_config: Option<Driver>,
    /// IPv6.
    #[prost(bool, tag = "3")]
    pub ipv6_enabled: bool,
    /// Internal (no external connectivity).
    #[prost(bool, tag = "4")]
    pub internal: bool,
    /// Attachable by standalone containers.
    #[prost(bool, tag = "6")]
    pub attachable: bool,
    /// The ingress network.
    #[prost(bool, tag = "7")]
    pub ingress: bool,
}

/// `Secret`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Secret {
    /// Secret id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// Name, data and drivers.
    #[prost(message, optional, tag = "3")]
    pub spec: Option<SecretSpec>,
    /// Internal to SwarmKit.
    #[prost(bool, tag = "4")]
    pub internal: bool,
}

/// `SecretSpec`. `data` is the secret's value: redacted in `Debug`, wiped on
/// drop.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct SecretSpec {
    /// Name and labels.
    #[prost(message, optional, tag = "1")]
    pub annotations: Option<Annotations>,
    /// The secret value.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// Templating driver.
    #[prost(message, optional, tag = "3")]
    pub templating: Option<Driver>,
    /// Secret driver (external secret store).
    #[prost(message, optional, tag = "4")]
    pub driver: Option<Driver>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("annotations", &self.annotations)
            .field("data", &Redacted(self.data.len()))
            .field("templating", &self.templating)
            .field("driver", &self.driver.as_ref().map(|d| &d.name))
            .finish()
    }
}

impl Drop for SecretSpec {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

/// `Config`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Config {
    /// Config id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// Name and data.
    #[prost(message, optional, tag = "3")]
    pub spec: Option<ConfigSpec>,
}

/// `ConfigSpec`. Configs are not secret in Swarm, but users put
/// credentials in them anyway: `data` is treated like a secret's.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ConfigSpec {
    /// Name and labels.
    #[prost(message, optional, tag = "1")]
    pub annotations: Option<Annotations>,
    /// The config's contents.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    /// Templating driver.
    #[prost(message, optional, tag = "3")]
    pub templating: Option<Driver>,
}

impl fmt::Debug for ConfigSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigSpec")
            .field("annotations", &self.annotations)
            .field("data", &Redacted(self.data.len()))
            .field("templating", &self.templating)
            .finish()
    }
}

impl Drop for ConfigSpec {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

/// `Resource` (the payload is not decoded).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Resource id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// Name and labels.
    #[prost(message, optional, tag = "3")]
    pub annotations: Option<Annotations>,
    /// The extension kind it belongs to.
    #[prost(string, tag = "4")]
    pub kind: String,
}

/// `Extension`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Extension {
    /// Extension id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// Name and labels.
    #[prost(message, optional, tag = "3")]
    pub annotations: Option<Annotations>,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
}

// ---------------------------------------------------------------------------
// The cluster object

/// `Cluster`: the swarm-wide settings and key material.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Cluster {
    /// Cluster id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Version and times.
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    /// The settings.
    #[prost(message, optional, tag = "3")]
    pub spec: Option<ClusterSpec>,
    /// The root CA: key, certificate, join tokens.
    #[prost(message, optional, tag = "4")]
    pub root_ca: Option<RootCa>,
    /// Gossip and IPsec keys of overlay networks.
    #[prost(message, repeated, tag = "5")]
    pub network_bootstrap_keys: Vec<EncryptionKey>,
    /// Lamport clock of those keys.
    #[prost(uint64, tag = "6")]
    pub encryption_key_lamport_clock: u64,
    /// Revoked certificates by node id.
    #[prost(btree_map = "string, message", tag = "8")]
    pub blacklisted_certificates: BTreeMap<String, BlacklistedCertificate>,
    /// Unlock keys (the KEK, subsystem `swarm-manager`) when autolock is on.
    #[prost(message, repeated, tag = "9")]
    pub unlock_keys: Vec<EncryptionKey>,
    /// FIPS mode.
    #[prost(bool, tag = "10")]
    pub fips: bool,
    /// Default address pools.
    #[prost(string, repeated, tag = "11")]
    pub default_address_pool: Vec<String>,
    /// Subnet size.
    #[prost(uint32, tag = "12")]
    pub subnet_size: u32,
    /// VXLAN UDP port.
    #[prost(uint32, tag = "13")]
    pub vxlan_udp_port: u32,
}

/// `BlacklistedCertificate`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BlacklistedCertificate {
    /// When the entry may be dropped.
    #[prost(message, optional, tag = "1")]
    pub expiry: Option<Timestamp>,
}

/// `ClusterSpec` (the parts the report reads).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ClusterSpec {
    /// Name (`default`) and labels.
    #[prost(message, optional, tag = "1")]
    pub annotations: Option<Annotations>,
    /// Orchestration settings.
    #[prost(message, optional, tag = "3")]
    pub orchestration: Option<OrchestrationConfig>,
    /// Raft settings.
    #[prost(message, optional, tag = "4")]
    pub raft: Option<RaftConfig>,
    /// Dispatcher settings.
    #[prost(message, optional, tag = "5")]
    pub dispatcher: Option<DispatcherConfig>,
    /// CA settings.
    #[prost(message, optional, tag = "6")]
    pub ca_config: Option<CaConfig>,
    /// Autolock.
    #[prost(message, optional, tag = "8")]
    pub encryption_config: Option<EncryptionConfig>,
}

/// `OrchestrationConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OrchestrationConfig {
    /// Tasks kept per slot.
    #[prost(int64, tag = "1")]
    pub task_history_retention_limit: i64,
}

/// `RaftConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftConfig {
    /// Entries between snapshots.
    #[prost(uint64, tag = "1")]
    pub snapshot_interval: u64,
    /// Older snapshots kept.
    #[prost(uint64, tag = "2")]
    pub keep_old_snapshots: u64,
    /// Entries kept for slow followers.
    #[prost(uint64, tag = "3")]
    pub log_entries_for_slow_followers: u64,
    /// Heartbeat tick.
    #[prost(uint32, tag = "4")]
    pub heartbeat_tick: u32,
    /// Election tick.
    #[prost(uint32, tag = "5")]
    pub election_tick: u32,
}

/// `DispatcherConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DispatcherConfig {
    /// Heartbeat period of agents.
    #[prost(message, optional, tag = "1")]
    pub heartbeat_period: Option<Duration>,
}

/// `EncryptionConfig`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptionConfig {
    /// Autolock: managers need the unlock key to start.
    #[prost(bool, tag = "1")]
    pub auto_lock_managers: bool,
}

/// `CAConfig`. `signing_ca_key` is a CA private key: redacted in `Debug`,
/// wiped on drop.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct CaConfig {
    /// Lifetime of node certificates.
    #[prost(message, optional, tag = "1")]
    pub node_cert_expiry: Option<Duration>,
    /// External CAs.
    #[prost(message, repeated, tag = "2")]
    pub external_cas: Vec<ExternalCa>,
    /// A signing CA certificate supplied by the user (PEM).
    #[prost(bytes = "vec", tag = "3")]
    pub signing_ca_cert: Vec<u8>,
    /// Its key (PEM, secret).
    #[prost(bytes = "vec", tag = "4")]
    pub signing_ca_key: Vec<u8>,
    /// Bumped to force a root rotation.
    #[prost(uint64, tag = "5")]
    pub force_rotate: u64,
}

impl fmt::Debug for CaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaConfig")
            .field("node_cert_expiry", &self.node_cert_expiry)
            .field("external_cas", &self.external_cas)
            .field("signing_ca_cert", &self.signing_ca_cert.len())
            .field("signing_ca_key", &Redacted(self.signing_ca_key.len()))
            .field("force_rotate", &self.force_rotate)
            .finish()
    }
}

impl Drop for CaConfig {
    fn drop(&mut self) {
        self.signing_ca_key.zeroize();
    }
}

/// `ExternalCA`. Its options may hold credentials: their values are
/// redacted in `Debug` and wiped on drop.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ExternalCa {
    /// 0 CFSSL.
    #[prost(int32, tag = "1")]
    pub protocol: i32,
    /// URL of the CA.
    #[prost(string, tag = "2")]
    pub url: String,
    /// Protocol options.
    #[prost(btree_map = "string, string", tag = "3")]
    pub options: BTreeMap<String, String>,
    /// The CA certificate it signs with (PEM).
    #[prost(bytes = "vec", tag = "4")]
    pub ca_cert: Vec<u8>,
}

impl fmt::Debug for ExternalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalCa")
            .field("protocol", &self.protocol)
            .field("url", &self.url)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("ca_cert", &self.ca_cert.len())
            .finish()
    }
}

impl Drop for ExternalCa {
    fn drop(&mut self) {
        for v in self.options.values_mut() {
            v.zeroize();
        }
    }
}

/// `RootCA`. `ca_key` is the root CA's private key, unencrypted: redacted
/// in `Debug`, wiped on drop.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct RootCa {
    /// The CA key (PEM `EC PRIVATE KEY`, secret).
    #[prost(bytes = "vec", tag = "1")]
    pub ca_key: Vec<u8>,
    /// The CA certificate (PEM).
    #[prost(bytes = "vec", tag = "2")]
    pub ca_cert: Vec<u8>,
    /// `sha256:<hex>` of `ca_cert`.
    #[prost(string, tag = "3")]
    pub ca_cert_hash: String,
    /// Join tokens.
    #[prost(message, optional, tag = "4")]
    pub join_tokens: Option<JoinTokens>,
    /// Set while a root rotation is in progress.
    #[prost(message, optional, tag = "5")]
    pub root_rotation: Option<RootRotation>,
    /// `force_rotate` value of the last forced rotation.
    #[prost(uint64, tag = "6")]
    pub last_forced_rotation: u64,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("ca_key", &Redacted(self.ca_key.len()))
            .field("ca_cert", &self.ca_cert.len())
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("join_tokens", &self.join_tokens)
            .field("root_rotation", &self.root_rotation)
            .field("last_forced_rotation", &self.last_forced_rotation)
            .finish()
    }
}

impl Drop for RootCa {
    fn drop(&mut self) {
        self.ca_key.zeroize();
    }
}

/// `JoinTokens`. Both are secrets: redacted in `Debug`, wiped on drop.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct JoinTokens {
    /// `SWMTKN-1-<digest>-<secret>` for workers.
    #[prost(string, tag = "1")]
    pub worker: String,
    /// The same for managers.
    #[prost(string, tag = "2")]
    pub manager: String,
}

impl fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokens")
            .field("worker", &Redacted(self.worker.len()))
            .field("manager", &Redacted(self.manager.len()))
            .finish()
    }
}

impl Drop for JoinTokens {
    fn drop(&mut self) {
        self.worker.zeroize();
        self.manager.zeroize();
    }
}

/// `RootRotation`: the new root during a CA rotation. `ca_key` is secret.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct RootRotation {
    /// The new CA certificate (PEM).
    #[prost(bytes = "vec", tag = "1")]
    pub ca_cert: Vec<u8>,
    /// Its key (PEM, secret).
    #[prost(bytes = "vec", tag = "2")]
    pub ca_key: Vec<u8>,
    /// The new root cross-signed by the old one (PEM).
    #[prost(bytes = "vec", tag = "3")]
    pub cross_signed_ca_cert: Vec<u8>,
}

impl fmt::Debug for RootRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootRotation")
            .field("ca_cert", &self.ca_cert.len())
            .field("ca_key", &Redacted(self.ca_key.len()))
            .field("cross_signed_ca_cert", &self.cross_signed_ca_cert.len())
            .finish()
    }
}

impl Drop for RootRotation {
    fn drop(&mut self) {
        self.ca_key.zeroize();
    }
}

/// `EncryptionKey`: a network key or the unlock key. `key` is secret.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct EncryptionKey {
    /// `swarm-manager`, `networking:gossip` or `networking:ipsec`.
    #[prost(string, tag = "1")]
    pub subsystem: String,
    /// 0 AES_128_GCM.
    #[prost(int32, tag = "2")]
    pub algorithm: i32,
    /// The key (secret).
    #[prost(bytes = "vec", tag = "3")]
    pub key: Vec<u8>,
    /// Lamport time of the key.
    #[prost(uint64, tag = "4")]
    pub lamport_time: u64,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("subsystem", &self.subsystem)
            .field("algorithm", &self.algorithm)
            .field("key", &Redacted(self.key.len()))
            .field("lamport_time", &self.lamport_time)
            .finish()
    }
}

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// Prints `<redacted: N bytes>` in a `Debug`.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted: {} bytes>", self.0)
    }
}

// ---------------------------------------------------------------------------
// The raw wire format, for the store (objects kept as bytes) and the dump.

/// A minimal protobuf wire reader over a byte slice: fields in order, no
/// allocation, an error (never a panic) on anything malformed.
pub(crate) mod wire {
    /// One field's value as it is on the wire.
    #[derive(Clone, Copy)]
    pub(crate) enum Value<'a> {
        /// Wire type 0.
        Varint(u64),
        /// Wire type 1.
        Fixed64(u64),
        /// Wire type 2.
        Bytes(&'a [u8]),
        /// Wire type 5.
        Fixed32(u32),
    }

    impl Value<'_> {
        /// The wire type number.
        pub(crate) fn wire_type(&self) -> u8 {
            match self {
                Value::Varint(_) => 0,
                Value::Fixed64(_) => 1,
                Value::Bytes(_) => 2,
                Value::Fixed32(_) => 5,
            }
        }
    }

    /// What is wrong, and where.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct WireError {
        /// Offset in the message where the bad field starts.
        pub(crate) offset: usize,
        /// What is wrong.
        pub(crate) what: &'static str,
    }

    /// Iterates over a message's fields; stops after the first error.
    pub(crate) struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
        failed: bool,
    }

    impl<'a> Reader<'a> {
        /// Reads `buf` as one message.
        pub(crate) fn new(buf: &'a [u8]) -> Self {
            Reader {
                buf,
                pos: 0,
                failed: false,
            }
        }

        fn varint(&mut self) -> Option<u64> {
            let mut v: u64 = 0;
            for i in 0..10 {
                let b = *self.buf.get(self.pos)?;
                self.pos += 1;
                if i == 9 && b > 1 {
                    return None;
                }
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    return Some(v);
                }
            }
            None
        }

        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let end = self.pos.checked_add(n)?;
            let s = self.buf.get(self.pos..end)?;
            self.pos = end;
            Some(s)
        }

        fn field(&mut self, start: usize) -> Result<(u32, Value<'a>), WireError> {
            let bad = |what| WireError {
                offset: start,
                what,
            };
            let key = self.varint().ok_or(bad("bad field key"))?;
            let number = u32::try_from(key >> 3)
                .ok()
                .filter(|n| (1..(1 << 29)).contains(n))
                .ok_or(bad("field number out of range"))?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint().ok_or(bad("bad varint"))?),
                1 => {
                    let b = self.take(8).ok_or(bad("truncated fixed64"))?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    Value::Fixed64(u64::from_le_bytes(a))
                }
                2 => {
                    let len = self.varint().ok_or(bad("bad length"))?;
                    let len = usize::try_from(len).map_err(|_| bad("length too large"))?;
                    Value::Bytes(self.take(len).ok_or(bad("length past the end"))?)
                }
                5 => {
                    let b = self.take(4).ok_or(bad("truncated fixed32"))?;
                    let mut a = [0u8; 4];
                    a.copy_from_slice(b);
                    Value::Fixed32(u32::from_le_bytes(a))
                }
                3 | 4 => return Err(bad("groups are not used by SwarmKit")),
                _ => return Err(bad("invalid wire type")),
            };
            Ok((number, value))
        }
    }

    impl<'a> Iterator for Reader<'a> {
        type Item = Result<(u32, Value<'a>), WireError>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.failed || self.pos >= self.buf.len() {
                return None;
            }
            let start = self.pos;
            let r = self.field(start);
            if r.is_err() {
                self.failed = true;
            }
            Some(r)
        }
    }

    /// Decodes a packed run of varints (a packed repeated scalar field).
    pub(crate) fn packed_varints(buf: &[u8]) -> Result<Vec<u64>, WireError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while r.pos < buf.len() {
            let start = r.pos;
            out.push(r.varint().ok_or(WireError {
                offset: start,
                what: "bad packed varint",
            })?);
        }
        Ok(out)
    }

    /// Reads a varint at the start of `buf`, returning it and the bytes used.
    #[cfg(test)]
    pub(crate) fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
        let mut r = Reader::new(buf);
        r.varint().map(|v| (v, r.pos))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_fields_and_refuses_garbage() {
            // 1: varint 150, 2: "hi", 5: fixed32 1, 1: fixed64 2
            let b = [
                0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x2d, 1, 0, 0, 0, 0x09, 2, 0, 0, 0, 0, 0,
                0, 0,
            ];
            let fields: Vec<_> = Reader::new(&b)
                .collect::<Result<_, _>>()
                .unwrap_or_default();
            assert_eq!(fields.len(), 4);
            assert!(matches!(fields[0], (1, Value::Varint(150))));
            assert!(matches!(fields[1], (2, Value::Bytes(b"hi"))));
            assert!(matches!(fields[2], (5, Value::Fixed32(1))));
            assert!(matches!(fields[3], (1, Value::Fixed64(2))));
            for bad in [
                &[0x12, 0x05, b'a'][..],
                &[0x00, 0x01],
                &[0x0b],
                &[0x0e, 0],
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                &[
                    0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
            ] {
                let r: Result<Vec<_>, _> = Reader::new(bad).collect();
                assert!(r.is_err(), "{bad:?}");
            }
            assert_eq!(read_varint(&[0x96, 0x01]), Some((150, 2)));
            assert_eq!(packed_varints(&[1, 0x96, 0x01]).ok(), Some(vec![1, 150]));
            assert!(packed_varints(&[0x96]).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn secret_bearing_debug_is_redacted() {
        let mut spec = SecretSpec::default();
        spec.data = b"hunter2".to_vec();
        let mut tokens = JoinTokens::default();
        tokens.worker = "SWMTKN-1-abc-def".into();
        tokens.manager = "SWMTKN-1-abc-ghi".into();
        let mut root = RootCa::default();
        root.ca_key = b"-----BEGIN EC PRIVATE KEY-----".to_vec();
        root.join_tokens = Some(tokens);
        let mut pull = PullOptions::default();
        pull.registry_auth = "cmVnYXV0aA".into();
        let mut c = ContainerSpec::default();
        c.env = vec!["PASSWORD=topsecret".into()];
        c.pull_options = Some(pull);
        let text = format!("{spec:?} {root:?} {c:?}");
        for s in [
            "hunter2",
            "PRIVATE",
            "def",
            "ghi",
            "topsecret",
            "cmVnYXV0aA",
        ] {
            assert!(!text.contains(s), "{s} in {text}");
        }
        assert!(text.contains("PASSWORD=…"));
    }

    #[test]
    fn unknown_enum_values_survive() {
        let n = Node {
            id: "n".into(),
            role: 7,
            ..Default::default()
        };
        let back = Node::decode(n.encode_to_vec().as_slice()).unwrap_or_default();
        assert_eq!(back.role, 7);
    }
}
