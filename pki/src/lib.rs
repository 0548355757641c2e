//! Node identity and the cluster certificate authority.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod id;

pub use error::*;
pub use id::{ClusterId, ID_CHARS, NodeId, Role};
