//! The SwarmKit store rebuilt offline from a manager's raft log: the newest
//! snapshot, then the committed entries after it, applied in index order
//! (`shared/DOCKER-SWARM-FORMAT.md` §8).
//!
//! Objects are kept as the exact bytes SwarmKit wrote (in zeroizing
//! buffers: they hold secret values, CA keys, the unlock key and join
//! tokens), keyed by kind and id; typed views decode on demand
//! ([`Store::nodes`], [`Store::cluster`], …) and the JSON dump
//! ([`crate::dump`]) walks the bytes so that no field is lost.
//!
//! # How entries are applied (what a manager did)
//!
//! * An empty plaintext is the leader's no-op entry: counted, nothing to
//!   apply.
//! * An `InternalRaftRequest` is applied as one transaction, as SwarmKit's
//!   `MemoryStore.ApplyStoreActions` does: CREATE puts a new object (its id
//!   must be new), UPDATE replaces an existing one, REMOVE deletes one by
//!   id. If any action fails (CREATE of an id that exists, UPDATE or REMOVE
//!   of one that does not, an action kind other than 1–3, no target or a
//!   target kind this reader does not know), SwarmKit aborts the whole
//!   transaction and logs it; so does this reader, and it counts the entry
//!   as rejected with a notice naming its index. A leader checks its
//!   proposals against its own store first, so a rejection in a real log is
//!   a sign of damage or tampering. Name uniqueness is not checked.
//! * A ConfChange entry changes the raft membership: AddNode and UpdateNode
//!   put the `RaftMember` in its context, RemoveNode removes the member and
//!   records its raft id as removed.
//! * Entries at or below the snapshot index are never applied (they may be
//!   sealed with a retired data key, and the snapshot holds their effect).
//! * Entries after the commit index (not committed yet) are **not applied**
//!   by default, which is the state every other manager agrees on; they are
//!   counted and named in a notice. [`RebuildOptions::include_uncommitted`]
//!   applies them too (what this node would apply if it restarted as the
//!   sole leader).
//!
//! # Bounds
//!
//! Everything kept is a copy of part of the input: each object is at most
//! one entry or snapshot in size and replaces the previous version of
//! itself, so memory stays within the size of the log read. Notices are
//! capped at [`MAX_NOTICES`]. Malformed input gives a [`StoreError`], never
//! a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use prost::Message;
use zeroize::Zeroizing;

use crate::proto::{self, wire};
use crate::raftlog::{EntryKind, RaftLog};

/// Notices kept in a [`Rebuilt`]; more are counted, not kept.
pub const MAX_NOTICES: usize = 64;

/// What went wrong rebuilding the store or decoding an object from it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The snapshot is of a version this reader does not know.
    #[error(
        "unknown snapshot version {0} (only version 0 exists in SwarmKit up to Docker 20.10): \
         this state directory was written by a newer Docker; use a moat that supports it"
    )]
    UnknownSnapshotVersion(i32),

    /// The snapshot plaintext does not decode as `api.Snapshot`.
    #[error(
        "the raft snapshot does not decode ({detail}): it authenticated, so it is not damage \
         but a layout this reader does not know; please report it"
    )]
    BadSnapshot {
        /// What does not decode, and where.
        detail: String,
    },

    /// An entry's plaintext does not decode.
    #[error(
        "raft entry {index}: the {what} does not decode ({detail}): it authenticated, so it is \
         not damage but a layout this reader does not know; please report it",
        index = fmt_index(*index)
    )]
    BadEntry {
        /// The entry's raft index (unknown when [`Store::apply`] is called
        /// directly).
        index: Option<u64>,
        /// `InternalRaftRequest` or `ConfChange`.
        what: &'static str,
        /// What does not decode, and where.
        detail: String,
    },

    /// An entry or the snapshot to apply was not decrypted.
    #[error(
        "raft {what} is still encrypted: the store cannot be rebuilt without it; pass the \
         swarm's unlock key (--unlock-key-file FILE), as `docker swarm unlock-key -q` prints it"
    )]
    NotDecrypted {
        /// `entry N` or `snapshot at index N`.
        what: String,
    },

    /// A stored object does not decode as its kind.
    #[error(
        "stored {kind} {id:?} does not decode as a {kind} ({source}); the other objects can \
         still be read, and `moat store dump --docker-swarm` shows its raw fields"
    )]
    BadObject {
        /// Its kind.
        kind: ObjectKind,
        /// Its id.
        id: String,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
}

fn fmt_index(index: Option<u64>) -> String {
    index.map_or_else(|| "(index unknown)".to_owned(), |i| i.to_string())
}

impl StoreError {
    fn at(self, index: u64) -> StoreError {
        match self {
            StoreError::BadEntry { what, detail, .. } => StoreError::BadEntry {
                index: Some(index),
                what,
                detail,
            },
            other => other,
        }
    }
}

/// The kinds of objects in SwarmKit's store, in the order of their plural
/// names (the dump's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// `Cluster` (one, named `default`).
    Cluster,
    /// `Config`.
    Config,
    /// `Extension`.
    Extension,
    /// `Network`.
    Network,
    /// `Node`.
    Node,
    /// `Resource`.
    Resource,
    /// `Secret`.
    Secret,
    /// `Service`.
    Service,
    /// `Task`.
    Task,
}

impl ObjectKind {
    /// Every kind, in order.
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::Cluster,
        ObjectKind::Config,
        ObjectKind::Extension,
        ObjectKind::Network,
        ObjectKind::Node,
        ObjectKind::Resource,
        ObjectKind::Secret,
        ObjectKind::Service,
        ObjectKind::Task,
    ];

    /// The singular name (`node`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Cluster => "cluster",
            ObjectKind::Config => "config",
            ObjectKind::Extension => "extension",
            ObjectKind::Network => "network",
            ObjectKind::Node => "node",
            ObjectKind::Resource => "resource",
            ObjectKind::Secret => "secret",
            ObjectKind::Service => "service",
            ObjectKind::Task => "task",
        }
    }

    /// The plural name (`nodes`), as in the dump.
    pub fn plural(self) -> &'static str {
        match self {
            ObjectKind::Cluster => "clusters",
            ObjectKind::Config => "configs",
            ObjectKind::Extension => "extensions",
            ObjectKind::Network => "networks",
            ObjectKind::Node => "nodes",
            ObjectKind::Resource => "resources",
            ObjectKind::Secret => "secrets",
            ObjectKind::Service => "services",
            ObjectKind::Task => "tasks",
        }
    }

    /// The kind of `StoreAction`'s `target` field number `tag`.
    fn from_action_tag(tag: u32) -> Option<ObjectKind> {
        Some(match tag {
            2 => ObjectKind::Node,
            3 => ObjectKind::Service,
            4 => ObjectKind::Task,
            5 => ObjectKind::Network,
            6 => ObjectKind::Cluster,
            7 => ObjectKind::Secret,
            8 => ObjectKind::Resource,
            9 => ObjectKind::Extension,
            10 => ObjectKind::Config,
            _ => return None,
        })
    }

    /// The kind of `StoreSnapshot`'s field number `tag`.
    fn from_snapshot_tag(tag: u32) -> Option<ObjectKind> {
        Some(match tag {
            1 => ObjectKind::Node,
            2 => ObjectKind::Service,
            3 => ObjectKind::Network,
            4 => ObjectKind::Task,
            5 => ObjectKind::Cluster,
            6 => ObjectKind::Secret,
            7 => ObjectKind::Resource,
            8 => ObjectKind::Extension,
            9 => ObjectKind::Config,
            _ => return None,
        })
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The store: objects by kind and id (as their encoded bytes), and the raft
/// membership. Its `Debug` shows counts only.
#[derive(Default, Clone)]
pub struct Store {
    objects: BTreeMap<(ObjectKind, String), Zeroizing<Vec<u8>>>,
    members: BTreeMap<u64, proto::RaftMember>,
    removed: BTreeSet<u64>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Store");
        for kind in ObjectKind::ALL {
            d.field(kind.plural(), &self.count(kind));
        }
        d.field("members", &self.members.len()).finish()
    }
}

/// What [`Store::apply`] did with one normal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// An empty plaintext: the leader's no-op entry.
    NoOp,
    /// The request was applied.
    Actions {
        /// How many store actions it held.
        count: usize,
    },
    /// SwarmKit would have refused the request; nothing was changed.
    Rejected(Rejection),
}

/// Why a request was rejected (the store is left as it was).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// CREATE of an id that exists.
    Exists {
        /// Object kind.
        kind: ObjectKind,
        /// Object id.
        id: String,
    },
    /// UPDATE or REMOVE of an id that does not exist.
    Missing {
        /// Object kind.
        kind: ObjectKind,
        /// Object id.
        id: String,
    },
    /// An action kind other than CREATE, UPDATE, REMOVE.
    UnknownAction(i32),
    /// An action with no target, or a target field this reader does not
    /// know (a newer object kind).
    UnknownTarget {
        /// The target's field number, if there was one.
        field: Option<u32>,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Exists { kind, id } => write!(f, "CREATE of {kind} {id} which exists"),
            Rejection::Missing { kind, id } => {
                write!(f, "UPDATE or REMOVE of {kind} {id} which does not exist")
            }
            Rejection::UnknownAction(a) => write!(f, "unknown store action kind {a}"),
            Rejection::UnknownTarget { field: Some(n) } => {
                write!(
                    f,
                    "store action target field {n} is not a known object kind"
                )
            }
            Rejection::UnknownTarget { field: None } => write!(f, "store action without a target"),
        }
    }
}

/// What [`Store::apply_conf_change`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfApplied {
    /// A member was added or updated (its raft id).
    Member(u64),
    /// A member was removed (its raft id).
    Removed(u64),
    /// A change type SwarmKit does not use (e.g. AddLearner); ignored.
    Ignored(i32),
}

/// How [`Store::rebuild_with`] treats the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebuildOptions {
    /// Also apply entries after the commit index. Off by default.
    pub include_uncommitted: bool,
}

/// The store rebuilt from a raft log, and how.
#[derive(Debug)]
pub struct Rebuilt {
    /// The store.
    pub store: Store,
    /// Index of the snapshot it started from (`None`: no snapshot, the
    /// whole store came from the WAL).
    pub snapshot_index: Option<u64>,
    /// Normal entries applied (including no-ops and rejected ones).
    pub applied_entries: usize,
    /// Leader no-op entries among them.
    pub noop_entries: usize,
    /// Entries SwarmKit would have refused (nothing applied; see notices).
    pub rejected_entries: usize,
    /// Store actions applied.
    pub actions: usize,
    /// ConfChange entries applied.
    pub conf_changes: usize,
    /// Entries after the commit index.
    pub uncommitted_entries: usize,
    /// Whether those were applied ([`RebuildOptions::include_uncommitted`]).
    pub uncommitted_applied: bool,
    /// Entries of a type other than Normal and ConfChange (skipped).
    pub unknown_entries: usize,
    /// The index of the last entry applied (or the snapshot's).
    pub last_applied_index: u64,
    /// What is worth telling the operator, at most [`MAX_NOTICES`].
    pub notices: Vec<String>,
    /// Notices beyond [`MAX_NOTICES`], counted only.
    pub notices_dropped: usize,
}

impl Rebuilt {
    fn notice(&mut self, text: String) {
        if self.notices.len() < MAX_NOTICES {
            self.notices.push(text);
        } else {
            self.notices_dropped += 1;
        }
    }
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// The store held in a snapshot's plaintext (`api.Snapshot`).
    ///
    /// A version other than 0 is refused. Objects are kept byte for byte; a
    /// field of the store snapshot that is not a known kind is skipped.
    pub fn from_snapshot(plaintext: &[u8]) -> Result<Store, StoreError> {
        let bad = |detail: String| StoreError::BadSnapshot { detail };
        let mut store = Store::new();
        let mut membership: Vec<&[u8]> = Vec::new();
        let mut stores: Vec<&[u8]> = Vec::new();
        for field in wire::Reader::new(plaintext) {
            let (number, value) =
                field.map_err(|e| bad(format!("{} at byte {}", e.what, e.offset)))?;
            match (number, value) {
                (1, wire::Value::Varint(v)) => {
                    // An enum is an int32 on the wire (sign-extended).
                    let version = v as i64 as i32;
                    if version != 0 {
                        return Err(StoreError::UnknownSnapshotVersion(version));
                    }
                }
                (2, wire::Value::Bytes(b)) => membership.push(b),
                (3, wire::Value::Bytes(b)) => stores.push(b),
                (1..=3, v) => {
                    return Err(bad(format!(
                        "field {number} has wire type {}",
                        v.wire_type()
                    )));
                }
                _ => {}
            }
        }
        for b in membership {
            let m = proto::ClusterSnapshot::decode(b)
                .map_err(|e| bad(format!("the membership: {e}")))?;
            for member in m.members {
                store.members.insert(member.raft_id, member);
            }
            store.removed.extend(m.removed);
        }
        for b in stores {
            for field in wire::Reader::new(b) {
                let (number, value) = field
                    .map_err(|e| bad(format!("the store: {} at byte {}", e.what, e.offset)))?;
                let Some(kind) = ObjectKind::from_snapshot_tag(number) else {
                    continue;
                };
                let wire::Value::Bytes(object) = value else {
                    return Err(bad(format!(
                        "the store's {} field has wire type {}",
                        kind.plural(),
                        value.wire_type()
                    )));
                };
                let id =
                    object_id(object).map_err(|d| bad(format!("a {kind} in the store: {d}")))?;
                store
                    .objects
                    .insert((kind, id), Zeroizing::new(object.to_vec()));
            }
        }
        Ok(store)
    }

    /// Applies one normal entry's plaintext (an `InternalRaftRequest`, or
    /// empty for the leader's no-op) as one transaction: see the module
    /// documentation. Malformed bytes are an error and change nothing; a
    /// request SwarmKit would refuse is [`Applied::Rejected`] and changes
    /// nothing.
    pub fn apply(&mut self, plaintext: &[u8]) -> Result<Applied, StoreError> {
        if plaintext.is_empty() {
            return Ok(Applied::NoOp);
        }
        let bad = |detail: String| StoreError::BadEntry {
            index: None,
            what: "InternalRaftRequest",
            detail,
        };
        let mut actions: Vec<RawAction<'_>> = Vec::new();
        for field in wire::Reader::new(plaintext) {
            let (number, value) =
                field.map_err(|e| bad(format!("{} at byte {}", e.what, e.offset)))?;
            match (number, value) {
                (2, wire::Value::Bytes(b)) => {
                    actions.push(parse_action(b).map_err(bad)?);
                }
                (1, wire::Value::Varint(_)) => {}
                (1 | 2, v) => {
                    return Err(bad(format!(
                        "field {number} has wire type {}",
                        v.wire_type()
                    )));
                }
                _ => {}
            }
        }

        // Stage the transaction, then commit it only if every action is
        // valid (SwarmKit aborts the whole transaction otherwise).
        let mut staged: BTreeMap<(ObjectKind, String), Option<&[u8]>> = BTreeMap::new();
        for (action, target) in &actions {
            let Some((field, object)) = *target else {
                return Ok(Applied::Rejected(Rejection::UnknownTarget { field: None }));
            };
            let Some(kind) = ObjectKind::from_action_tag(field) else {
                return Ok(Applied::Rejected(Rejection::UnknownTarget {
                    field: Some(field),
                }));
            };
            let id = object_id(object).map_err(|d| bad(format!("a {kind}: {d}")))?;
            let key = (kind, id);
            let exists = match staged.get(&key) {
                Some(v) => v.is_some(),
                None => self.objects.contains_key(&key),
            };
            let (kind, id) = key;
            match (*action, exists) {
                (proto::store_action_kind::CREATE, true) => {
                    return Ok(Applied::Rejected(Rejection::Exists { kind, id }));
                }
                (proto::store_action_kind::UPDATE | proto::store_action_kind::REMOVE, false) => {
                    return Ok(Applied::Rejected(Rejection::Missing { kind, id }));
                }
                (proto::store_action_kind::CREATE | proto::store_action_kind::UPDATE, _) => {
                    staged.insert((kind, id), Some(object));
                }
                (proto::store_action_kind::REMOVE, _) => {
                    staged.insert((kind, id), None);
                }
                (other, _) => return Ok(Applied::Rejected(Rejection::UnknownAction(other))),
            }
        }
        for (key, value) in staged {
            match value {
                Some(bytes) => {
                    self.objects.insert(key, Zeroizing::new(bytes.to_vec()));
                }
                None => {
                    self.objects.remove(&key);
                }
            }
        }
        Ok(Applied::Actions {
            count: actions.len(),
        })
    }

    /// Applies one ConfChange entry's plaintext (`raftpb.ConfChange`) to
    /// the raft membership.
    pub fn apply_conf_change(&mut self, plaintext: &[u8]) -> Result<ConfApplied, StoreError> {
        let bad = |detail: String| StoreError::BadEntry {
            index: None,
            what: "ConfChange",
            detail,
        };
        let cc = proto::ConfChange::decode(plaintext).map_err(|e| bad(e.to_string()))?;
        match cc.change_type {
            proto::conf_change_type::ADD_NODE | proto::conf_change_type::UPDATE_NODE => {
                let member = proto::RaftMember::decode(cc.context.as_slice())
                    .map_err(|e| bad(format!("its RaftMember context: {e}")))?;
                let id = if member.raft_id != 0 {
                    member.raft_id
                } else {
                    cc.node_id
                };
                self.removed.remove(&id);
                self.members.insert(id, member);
                Ok(ConfApplied::Member(id))
            }
            proto::conf_change_type::REMOVE_NODE => {
                self.members.remove(&cc.node_id);
                self.removed.insert(cc.node_id);
                Ok(ConfApplied::Removed(cc.node_id))
            }
            other => Ok(ConfApplied::Ignored(other)),
        }
    }

    /// Rebuilds the store from a decrypted raft log with the default
    /// options (committed entries only).
    pub fn rebuild(log: &RaftLog) -> Result<Rebuilt, StoreError> {
        Store::rebuild_with(log, RebuildOptions::default())
    }

    /// Rebuilds the store from a decrypted raft log: the snapshot, then the
    /// entries after it in index order (a later entry with an index at or
    /// below one already held replaces it and everything after it, as raft
    /// truncates its log).
    pub fn rebuild_with(log: &RaftLog, options: RebuildOptions) -> Result<Rebuilt, StoreError> {
        let (store, snapshot_index) = match &log.snapshot {
            Some(snap) => {
                let plaintext = snap.plaintext.as_ref().ok_or(StoreError::NotDecrypted {
                    what: format!("snapshot at index {}", snap.index),
                })?;
                (Store::from_snapshot(plaintext)?, Some(snap.index))
            }
            None => (Store::new(), None),
        };
        let base = snapshot_index.unwrap_or(0);
        let mut out = Rebuilt {
            store,
            snapshot_index,
            applied_entries: 0,
            noop_entries: 0,
            rejected_entries: 0,
            actions: 0,
            conf_changes: 0,
            uncommitted_entries: 0,
            uncommitted_applied: options.include_uncommitted,
            unknown_entries: 0,
            last_applied_index: base,
            notices: Vec::new(),
            notices_dropped: 0,
        };

        // The log as raft holds it: a later entry truncates the ones at or
        // after its index.
        let mut held: BTreeMap<u64, usize> = BTreeMap::new();
        for (pos, e) in log.entries.iter().enumerate() {
            if e.index <= base {
                continue;
            }
            held.split_off(&e.index);
            held.insert(e.index, pos);
        }

        let mut expected = base + 1;
        let mut first_uncommitted: Option<u64> = None;
        for (&index, &pos) in &held {
            let Some(entry) = log.entries.get(pos) else {
                continue;
            };
            if index != expected {
                out.notice(format!(
                    "raft entries {expected} to {} are missing: the store rebuilt lacks their \
                     changes",
                    index - 1
                ));
            }
            expected = index + 1;
            if !entry.committed {
                out.uncommitted_entries += 1;
                first_uncommitted.get_or_insert(index);
                if !options.include_uncommitted {
                    continue;
                }
            }
            let plaintext = entry
                .plaintext
                .as_ref()
                .ok_or_else(|| StoreError::NotDecrypted {
                    what: format!("entry {index}"),
                })?;
            match entry.kind {
                EntryKind::Normal => {
                    out.applied_entries += 1;
                    match out.store.apply(plaintext).map_err(|e| e.at(index))? {
                        Applied::NoOp => out.noop_entries += 1,
                        Applied::Actions { count } => out.actions += count,
                        Applied::Rejected(why) => {
                            out.rejected_entries += 1;
                            out.notice(format!(
                                "raft entry {index} was not applied, as SwarmKit would not \
                                 apply it: {why}"
                            ));
                        }
                    }
                }
                EntryKind::ConfChange => {
                    out.conf_changes += 1;
                    if let ConfApplied::Ignored(t) = out
                        .store
                        .apply_conf_change(plaintext)
                        .map_err(|e| e.at(index))?
                    {
                        out.notice(format!(
                            "raft entry {index}: configuration change of type {t} ignored"
                        ));
                    }
                }
                _ => {
                    out.unknown_entries += 1;
                    out.notice(format!(
                        "raft entry {index} is of an entry type this reader does not know; skipped"
                    ));
                    continue;
                }
            }
            out.last_applied_index = index;
        }
        if let Some(first) = first_uncommitted {
            out.notice(format!(
                "{} raft entries from index {first} are not committed yet; {}",
                out.uncommitted_entries,
                if options.include_uncommitted {
                    "they were applied"
                } else {
                    "they were not applied"
                }
            ));
        }
        Ok(out)
    }

    /// How many objects of a kind.
    pub fn count(&self, kind: ObjectKind) -> usize {
        self.objects
            .range((kind, String::new())..)
            .take_while(|((k, _), _)| *k == kind)
            .count()
    }

    /// Every object, by kind then id: kind, id and the encoded object.
    pub fn objects(&self) -> impl Iterator<Item = (ObjectKind, &str, &[u8])> {
        self.objects
            .iter()
            .map(|((k, id), b)| (*k, id.as_str(), b.as_slice()))
    }

    /// The objects of one kind, by id.
    pub fn objects_of(&self, kind: ObjectKind) -> impl Iterator<Item = (&str, &[u8])> {
        self.objects
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|((_, id), b)| (id.as_str(), b.as_slice()))
    }

    /// One object's encoded bytes.
    pub fn get(&self, kind: ObjectKind, id: &str) -> Option<&[u8]> {
        self.objects
            .get(&(kind, id.to_owned()))
            .map(|b| b.as_slice())
    }

    /// The raft members, by raft id.
    pub fn members(&self) -> impl Iterator<Item = &proto::RaftMember> {
        self.members.values()
    }

    /// Raft ids of removed members.
    pub fn removed_members(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    fn decode_all<M: Message + Default>(&self, kind: ObjectKind) -> Result<Vec<M>, StoreError> {
        self.objects_of(kind)
            .map(|(id, b)| {
                M::decode(b).map_err(|source| StoreError::BadObject {
                    kind,
                    id: id.to_owned(),
                    source,
                })
            })
            .collect()
    }

    /// The nodes, by id.
    pub fn nodes(&self) -> Result<Vec<proto::Node>, StoreError> {
        self.decode_all(ObjectKind::Node)
    }

    /// The services, by id.
    pub fn services(&self) -> Result<Vec<proto::Service>, StoreError> {
        self.decode_all(ObjectKind::Service)
    }

    /// The tasks, by id.
    pub fn tasks(&self) -> Result<Vec<proto::Task>, StoreError> {
        self.decode_all(ObjectKind::Task)
    }

    /// The networks, by id.
    pub fn networks(&self) -> Result<Vec<proto::Network>, StoreError> {
        self.decode_all(ObjectKind::Network)
    }

    /// The secrets, by id (their values included: handle with care).
    pub fn secrets(&self) -> Result<Vec<proto::Secret>, StoreError> {
        self.decode_all(ObjectKind::Secret)
    }

    /// The configs, by id.
    pub fn configs(&self) -> Result<Vec<proto::Config>, StoreError> {
        self.decode_all(ObjectKind::Config)
    }

    /// Every cluster object, by id (SwarmKit keeps one).
    pub fn clusters(&self) -> Result<Vec<proto::Cluster>, StoreError> {
        self.decode_all(ObjectKind::Cluster)
    }

    /// The cluster object: the one named `default` (SwarmKit's only one),
    /// else the first by id; `None` if there is none.
    pub fn cluster(&self) -> Result<Option<proto::Cluster>, StoreError> {
        Ok(pick_cluster(self.clusters()?))
    }
}

/// Of the cluster objects `all`, the one named `default` (SwarmKit's only
/// one), else the first; `None` if there is none.
pub(crate) fn pick_cluster(mut all: Vec<proto::Cluster>) -> Option<proto::Cluster> {
    let pos = all
        .iter()
        .position(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.annotations.as_ref())
                .is_some_and(|a| a.name == "default")
        })
        .unwrap_or(0);
    (pos < all.len()).then(|| all.swap_remove(pos))
}

/// A `StoreAction` as read: its kind, and its target's field number and
/// bytes.
type RawAction<'a> = (i32, Option<(u32, &'a [u8])>);

/// Reads one `StoreAction`: its action kind and its target (field number
/// and bytes; the last target wins, as in Go's generated code).
fn parse_action(b: &[u8]) -> Result<RawAction<'_>, String> {
    let mut action = 0;
    let mut target = None;
    for field in wire::Reader::new(b) {
        let (number, value) =
            field.map_err(|e| format!("a store action: {} at byte {}", e.what, e.offset))?;
        match (number, value) {
            (1, wire::Value::Varint(v)) => action = v as i64 as i32,
            (1, v) => {
                return Err(format!(
                    "a store action's kind has wire type {}",
                    v.wire_type()
                ));
            }
            (n, wire::Value::Bytes(o)) => target = Some((n, o)),
            (n, _) if ObjectKind::from_action_tag(n).is_some() => {
                return Err(format!("store action target {n} is not a message"));
            }
            _ => {}
        }
    }
    Ok((action, target))
}

/// An object's id: its field 1 (every store object has `string id = 1`);
/// the last occurrence wins. Empty if absent.
fn object_id(object: &[u8]) -> Result<String, String> {
    let mut id: &[u8] = &[];
    for field in wire::Reader::new(object) {
        let (number, value) = field.map_err(|e| format!("{} at byte {}", e.what, e.offset))?;
        if number == 1 {
            let wire::Value::Bytes(b) = value else {
                return Err(format!("its id has wire type {}", value.wire_type()));
            };
            id = b;
        }
    }
    String::from_utf8(id.to_vec()).map_err(|_| "its id is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(id: &str, name: &str, data: &[u8]) -> proto::Secret {
        let mut spec = proto::SecretSpec::default();
        spec.annotations = Some(proto::Annotations {
            name: name.into(),
            ..Default::default()
        });
        spec.data = data.to_vec();
        proto::Secret {
            id: id.into(),
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn request(actions: Vec<(i32, proto::StoreTarget)>) -> Vec<u8> {
        proto::InternalRaftRequest {
            id: 1,
            action: actions
                .into_iter()
                .map(|(action, t)| proto::StoreAction {
                    action,
                    target: Some(t),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    use proto::store_action_kind::{CREATE, REMOVE, UPDATE};

    #[test]
    fn create_update_remove_and_atomic_rejection() {
        let mut s = Store::new();
        assert_eq!(s.apply(&[]).ok(), Some(Applied::NoOp));
        let r = request(vec![(
            CREATE,
            proto::StoreTarget::Secret(secret("a", "s1", b"x")),
        )]);
        assert_eq!(s.apply(&r).ok(), Some(Applied::Actions { count: 1 }));
        let r = request(vec![(
            UPDATE,
            proto::StoreTarget::Secret(secret("a", "s1b", b"y")),
        )]);
        assert_eq!(s.apply(&r).ok(), Some(Applied::Actions { count: 1 }));
        let got = s.secrets().unwrap_or_default();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].spec.as_ref().map(|s| s.data.clone()),
            Some(b"y".to_vec())
        );

        // A request whose second action fails changes nothing.
        let r = request(vec![
            (CREATE, proto::StoreTarget::Secret(secret("b", "s2", b"z"))),
            (
                UPDATE,
                proto::StoreTarget::Secret(secret("nope", "s3", b"z")),
            ),
        ]);
        assert!(matches!(
            s.apply(&r),
            Ok(Applied::Rejected(Rejection::Missing { .. }))
        ));
        assert_eq!(s.count(ObjectKind::Secret), 1);

        // Create then remove within one request.
        let r = request(vec![
            (CREATE, proto::StoreTarget::Secret(secret("b", "s2", b"z"))),
            (REMOVE, proto::StoreTarget::Secret(secret("a", "", b""))),
        ]);
        assert_eq!(s.apply(&r).ok(), Some(Applied::Actions { count: 2 }));
        assert!(s.get(ObjectKind::Secret, "a").is_none());
        assert!(s.get(ObjectKind::Secret, "b").is_some());

        let r = request(vec![(
            CREATE,
            proto::StoreTarget::Secret(secret("b", "", b"")),
        )]);
        assert!(matches!(
            s.apply(&r),
            Ok(Applied::Rejected(Rejection::Exists { .. }))
        ));
        let r = request(vec![(9, proto::StoreTarget::Secret(secret("c", "", b"")))]);
        assert_eq!(
            s.apply(&r).ok(),
            Some(Applied::Rejected(Rejection::UnknownAction(9)))
        );
        // A target field from the future (11), and no target at all.
        assert_eq!(
            s.apply(&[0x12, 0x04, 0x08, 0x01, 0x5a, 0x00]).ok(),
            Some(Applied::Rejected(Rejection::UnknownTarget {
                field: Some(11)
            }))
        );
        assert_eq!(
            s.apply(&[0x12, 0x02, 0x08, 0x01]).ok(),
            Some(Applied::Rejected(Rejection::UnknownTarget { field: None }))
        );
        assert!(matches!(
            s.apply(&[0x12, 0x05, 0x08]),
            Err(StoreError::BadEntry { .. })
        ));
    }

    #[test]
    fn snapshot_version_and_kinds() {
        let snap = proto::Snapshot {
            version: 0,
            membership: Some(proto::ClusterSnapshot {
                members: vec![proto::RaftMember {
                    raft_id: 7,
                    node_id: "n".into(),
                    ..Default::default()
                }],
                removed: vec![3],
            }),
            store: Some(proto::StoreSnapshot {
                secrets: vec![secret("s", "s1", b"v")],
                networks: vec![proto::Network {
                    id: "net".into(),
                    ..Default::default()
                }],
                tasks: vec![proto::Task {
                    id: "t".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        };
        let s = Store::from_snapshot(&snap.encode_to_vec()).unwrap_or_default();
        assert_eq!(s.count(ObjectKind::Secret), 1);
        assert_eq!(s.count(ObjectKind::Network), 1);
        assert_eq!(s.count(ObjectKind::Task), 1);
        assert_eq!(s.members().count(), 1);
        assert_eq!(s.removed_members().collect::<Vec<_>>(), vec![3]);
        let v1 = proto::Snapshot {
            version: 1,
            ..Default::default()
        };
        assert!(matches!(
            Store::from_snapshot(&v1.encode_to_vec()),
            Err(StoreError::UnknownSnapshotVersion(1))
        ));
    }

    #[test]
    fn conf_changes() {
        let mut s = Store::new();
        let member = proto::RaftMember {
            raft_id: 5,
            node_id: "n5".into(),
            addr: "10.0.0.5:2377".into(),
            status: None,
        };
        let cc = proto::ConfChange {
            id: 1,
            change_type: proto::conf_change_type::ADD_NODE,
            node_id: 5,
            context: member.encode_to_vec(),
        };
        assert_eq!(
            s.apply_conf_change(&cc.encode_to_vec()).ok(),
            Some(ConfApplied::Member(5))
        );
        let rm = proto::ConfChange {
            change_type: proto::conf_change_type::REMOVE_NODE,
            node_id: 5,
            ..Default::default()
        };
        assert_eq!(
            s.apply_conf_change(&rm.encode_to_vec()).ok(),
            Some(ConfApplied::Removed(5))
        );
        assert_eq!(s.members().count(), 0);
        assert!(s.apply_conf_change(&[0xff]).is_err());
    }
}
