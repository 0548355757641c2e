//! A member's certificate: renewed through the leader (a new key each
//! time), or — a manager whose certificate expired while the cluster was
//! down — issued to itself from the CA in its own store.

use moat_api::ErrorKind;
use moat_pki::{KeyAlgorithm, PrivateKey, Role};

use super::Member;
use crate::error::NodeError;
use crate::rpc::{self, RpcError, RpcErrorKind, method};

impl Member {
    /// Gets a certificate for the role the cluster has recorded, with a new
    /// key, and swaps it into live TLS.
    pub(crate) async fn renew(&self) -> Result<(), RpcError> {
        let key = PrivateKey::generate(KeyAlgorithm::default())
            .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
        let csr = key
            .csr()
            .map_err(|e| RpcError::new(RpcErrorKind::Internal, e.to_string()))?;
        let req = rpc::RenewReq {
            csr_pem: moat_pki::csr_pem(csr.as_ref()),
        };
        let resp: rpc::CertResp = self
            .call_leader(method::RENEW, &req, rpc::CALL_TIMEOUT)
            .await?;
        let identity = self
            .install_credentials(&resp.chain_pem, key)
            .map_err(RpcError::from)?;
        tracing::info!(serial = %identity.serial, role = identity.role.as_str(), not_after = %identity.not_after, "certificate renewed");
        Ok(())
    }

    /// Issues a manager a new certificate from the CA in its own store, with
    /// the role the store records for it.
    pub(crate) async fn self_renew(&self) -> Result<moat_pki::Identity, NodeError> {
        let kek = self.keyring.hold().kek();
        let state = moat_store::offline::read_state(
            &self.layout.store_dir(),
            moat_lock::KeySource::Key(&kek),
        )
        .await
        .map_err(|e| NodeError::new(ErrorKind::Internal, format!("reading the store: {e}")))?;
        // Only a manager the store still records as one, and not removed.
        if state.is_removed(&self.id) {
            return Err(crate::faults::removed_fault());
        }
        let role = state.nodes.get(&self.id).map(|n| n.role);
        if role != Some(Role::Manager) {
            return Err(NodeError::new(
                ErrorKind::FailedPrecondition,
                "the store does not record this node as a manager",
            ));
        }
        let role = Role::Manager;
        let key = PrivateKey::generate(KeyAlgorithm::default())
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let csr = key
            .csr()
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let (_, leaf_pem, _) = crate::ca::issue(
            &state,
            &moat_pki::csr_pem(csr.as_ref()),
            self.id,
            role,
            self.clock.now(),
        )
        .map_err(NodeError::from)?;
        let identity = self.install_credentials(&leaf_pem, key)?;
        // The cluster has no record of this certificate: renew through the
        // leader (which records it) at the agent's first round.
        self.renew_soon();
        Ok(identity)
    }
}
