//! The cluster store: openraft with an encrypted, durable log and
//! encrypted snapshots.
//!
//! moat-store owns the openraft type configuration ([`TypeConfig`]), the
//! cluster model and its commands ([`model`]), the encrypted log store
//! ([`LogStore`]), the state machine with encrypted snapshots
//! ([`StateMachineStore`]), and the record encryption both use
//! ([`RecordCipher`]). Every byte it writes is sealed with the DEK and
//! bound to its cluster, node, file kind and position.
//!
//! It never talks to the network (the raft network adapter lives in the
//! transport) and knows nothing of the CLI or HTTP. It calls moat-lock for
//! keys and sealing, and moat-pki/moat-tokens only for their types.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod crypto;
mod error;
pub mod model;
mod types;

pub use crypto::{FileKind, RecordCipher};
pub use error::StoreError;
pub use types::*;
