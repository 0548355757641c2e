//! Fixtures shared by the unit tests of this crate (compiled for tests
//! only).

use moat_pki::{NodeId, Role};
use moat_store::model::{ClusterState, NodeRecord};

/// Adds worker `id`, called `hostname`, Ready or Down, to `state`.
pub(crate) fn add_worker(state: &mut ClusterState, id: NodeId, hostname: &str, ready: bool) {
    state.nodes.insert(
        id,
        NodeRecord {
            id,
            hostname: hostname.into(),
            role: Role::Worker,
            address: String::new(),
            labels: Default::default(),
            cert_serial: String::new(),
            cert_not_after: 0,
            cert_issuer: String::new(),
            availability: Default::default(),
            ready,
        },
    );
}
