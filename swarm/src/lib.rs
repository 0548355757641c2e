//! Reads a Docker Swarm manager's state directory offline, and looks at a
//! live manager's port: what `moat audit report --docker-swarm` and
//! `moat store dump|verify --docker-swarm` are built on.
//!
//! The formats are in `shared/DOCKER-SWARM-FORMAT.md` (the map this crate
//! was built from; where the bytes disagreed, the bytes won and the code
//! says so). This crate **only reads**: every file is opened read-only, and
//! nothing in the directory is ever created, renamed or written.
//!
//! Everything read is untrusted input (a copy of a state directory may come
//! from anywhere): no input panics, sizes are checked before allocating,
//! and key material and decrypted records live in zeroizing buffers.
//!
//! # Modules
//!
//! * `dir`: the layout of a state directory, its files and their modes.
//! * `key`: the unlock key (`SWMKEY-1-…`, the KEK), the node key file
//!   (`swarm-node.key`: PKCS#8 protection and the raft data-key headers).
//! * `record`: `MaybeEncryptedRecord` and its algorithms.
//! * `wal`, `snap`: etcd's WAL framing with its CRC-32C chain, and
//!   snapshot files.
//! * `raftlog`: the snapshot and the WAL entries after it, decrypted.
//! * `proto`, `store`, `dump`: SwarmKit's stored objects, the store rebuilt
//!   from the log, and its redacted JSON dump.
//! * `inventory`: the crypto inventory the compliance report checks.
//! * `probe`: a live TLS look at a manager's port.
#![forbid(unsafe_code)]

pub mod dir;
pub mod dump;
pub mod error;
pub mod inventory;
pub mod key;
pub mod probe;
pub mod proto;
pub mod raftlog;
pub mod record;
pub mod snap;
pub mod store;
pub mod wal;
