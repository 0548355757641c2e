//! What the scheduler knows of a node: [`NodeView`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::NodeId;

/// A node's role in the cluster (`node.role` in constraints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// A Raft member that can lead.
    Manager,
    /// A node that only runs tasks.
    Worker,
}

impl NodeRole {
    /// Docker's word for it (`manager`, `worker`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a node takes tasks (Docker's `--availability`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum NodeAvailability {
    /// Takes new tasks.
    #[default]
    Active,
    /// Keeps its tasks, takes no new ones.
    Pause,
    /// Its tasks are moved elsewhere; takes no new ones.
    Drain,
}

impl NodeAvailability {
    /// Docker's word for it (`active`, `pause`, `drain`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeAvailability::Active => "active",
            NodeAvailability::Pause => "pause",
            NodeAvailability::Drain => "drain",
        }
    }
}

impl fmt::Display for NodeAvailability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Its id.
    pub id: NodeId,
    /// Its hostname (`node.hostname`).
    pub hostname: String,
    /// Its role (`node.role`).
    pub role: NodeRole,
    /// Its operator labels (`node.labels.KEY`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it takes tasks.
    pub availability: NodeAvailability,
    /// Whether it is up (heard from recently): a node that is not ready is
    /// down, and its tasks are replaced elsewhere.
    pub ready: bool,
}
