//! `moat join` (and `--rejoin`): pin before secret. The root bundle is
//! fetched from a manager not yet trusted, compared with the digest in the
//! token before the token's secret leaves this node, and only then is the
//! join made over a verified connection. A node rejoining with its old
//! identity proves it with the key of its latest certificate.

use std::str::FromStr;
use std::sync::Arc;

use moat_api::{ErrorKind, JoinRequest, JoinResponse, SecretString};
use moat_lock::UnlockKey;
use moat_pki::{KeyAlgorithm, PrivateKey, Role, TrustRoots};
use moat_tokens::JoinToken;
use moat_transport::ServerTrust;

use super::{Daemon, Phase};
use crate::addr::{normalize_listen, reserve_port};
use crate::error::NodeError;
use crate::files::{self, NodeFile};
use crate::member::Member;
use crate::rpc::{self, method};
use crate::wire::api_role;

impl Daemon {
    /// `moat join`.
    pub(crate) async fn join(&self, req: JoinRequest) -> Result<JoinResponse, NodeError> {
        let _guard = self.lifecycle.lock().await;
        let token = JoinToken::from_str(req.token.expose_secret()).map_err(|e| {
            NodeError::new(
                ErrorKind::InvalidArgument,
                format!("invalid join token: {e}"),
            )
            .hint("get a current token with `moat join-token worker` (or `manager`) on a manager")
        })?;
        let rejoin = if req.rejoin {
            let node = self.node().await.ok_or_else(|| {
                NodeError::new(
                    ErrorKind::FailedPrecondition,
                    "--rejoin needs a node that was in a cluster; this one never was",
                )
                .hint("join without --rejoin")
            })?;
            Some(node)
        } else {
            self.ensure_inactive().await?;
            None
        };
        let result = self.join_inner(&req, token, rejoin.clone()).await;
        // Before node.json exists nothing of the join is kept; after, the
        // node is a member and stays one.
        if result.is_err() && rejoin.is_none() && !self.layout.has_node_file() {
            self.abandon().await;
        }
        result
    }

    async fn join_inner(
        &self,
        req: &JoinRequest,
        token: JoinToken,
        rejoin: Option<Arc<Member>>,
    ) -> Result<JoinResponse, NodeError> {
        let remote = req.remote_addr.as_str();
        // 1. The root bundle, from a manager not yet trusted.
        let bundle: rpc::CaBundle = rpc::call_fresh(
            remote,
            &ServerTrust::Bootstrap,
            method::CA_BUNDLE,
            &rpc::Nothing {},
            rpc::CALL_TIMEOUT,
        )
        .await
        .map_err(NodeError::from)?;
        // 2. Pinned by the token: a mismatch ends here, before the token's
        // secret is sent anywhere.
        token
            .verify_ca(bundle.roots_pem.as_bytes())
            .map_err(|_| ca_mismatch(remote, &token, &bundle))?;
        let roots = TrustRoots::from_pem(bundle.roots_pem.as_bytes())
            .map_err(|e| NodeError::new(ErrorKind::Internal, format!("root CA bundle: {e}")))?;
        let cluster = roots
            .cluster_id()
            .map_err(|e| NodeError::new(ErrorKind::Internal, format!("root CA bundle: {e}")))?;
        // 3. Verified from now on.
        let tls = self.tls_context(cluster, roots.clone());
        let trust = ServerTrust::Verified(tls.clone());
        let key = PrivateKey::generate(KeyAlgorithm::default())
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let csr = key
            .csr()
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        let listen = normalize_listen(&req.listen_addr)?;
        let (listen, provisional) = reserve_port(&listen, req.advertise_addr.as_deref()).await?;
        let csr_pem = moat_pki::csr_pem(csr.as_ref());
        let proof = match &rejoin {
            Some(old) => Some(self.rejoin_proof(old, &csr_pem)?),
            None => None,
        };
        let join = rpc::JoinReq {
            token: SecretString::new(token.expose_secret().to_string()),
            csr_pem,
            hostname: self.hostname.clone(),
            advertise_addr: provisional.clone(),
            rejoin: proof,
        };
        let resp: rpc::CertResp =
            rpc::call_fresh(remote, &trust, method::JOIN, &join, rpc::SLOW_CALL_TIMEOUT)
                .await
                .map_err(NodeError::from)?;
        // 4. Keep it.
        let kek = match (&rejoin, &resp.unlock_key) {
            (Some(node), _) => node.keyring().copy_kek()?,
            // A manager joining a cluster with autolock on seals under the
            // unlock key from the start: no key file, ever.
            (None, Some(key)) => key.expose_secret().parse::<UnlockKey>().map_err(|e| {
                NodeError::new(
                    ErrorKind::Internal,
                    format!("the manager sent a malformed unlock key: {e}"),
                )
            })?,
            (None, None) => files::load_or_create_kek(&self.layout)?,
        };
        if let Some(old) = &rejoin {
            let mut phase = self.phase.write().await;
            if let Phase::Member {
                agent: Some(agent), ..
            } = &mut *phase
            {
                agent.abort();
            }
            old.stop_manager().await;
        }
        let mut file = NodeFile::new(
            resp.node_id,
            cluster,
            listen.clone(),
            provisional.clone(),
            resp.managers.clone(),
            0,
        );
        if rejoin.is_none() && resp.unlock_key.is_some() {
            file.key_generation = resp.key_generation;
        }
        let node = Member::new(
            file,
            self.layout.clone(),
            self.tls_context(cluster, roots),
            kek,
            self.journal.clone(),
            self.clock.clone(),
        );
        if let Some(source) = self.source.get() {
            let _ = node.source.set(*source);
        }
        node.install_credentials(&resp.chain_pem, key)?;
        // The cluster has admitted this node: from here on a restart must
        // bring it back, so node.json is written now, before the manager
        // side starts (the agent finishes that if this is interrupted).
        NodeFile::save(&node.node_file(), &self.layout)?;
        *self.phase.write().await = Phase::Member {
            node: node.clone(),
            agent: None,
        };
        if resp.role == Role::Manager {
            let started = match crate::roles::start_manager(&node, &listen).await {
                Ok(_) => node.become_voter(&provisional).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                self.run_agent(node).await;
                return Err(NodeError::new(
                    e.api_kind(),
                    format!(
                        "this node joined the cluster, but is not yet a voting manager: {}",
                        e.message()
                    ),
                )
                .hint(
                    "it keeps trying in the background; check with `moat node ls` on a manager",
                ));
            }
        }
        self.run_agent(node).await;
        tracing::info!(node = %resp.node_id, role = resp.role.as_str(), "joined the cluster");
        Ok(JoinResponse {
            node_id: resp.node_id.to_string(),
            role: api_role(resp.role),
            warning: resp.warning,
        })
    }

    /// Signs the new CSR with the key of the node's old (expired)
    /// certificate.
    fn rejoin_proof(&self, old: &Member, csr_pem: &str) -> Result<rpc::RejoinProof, NodeError> {
        let files::TlsFiles { chain, key, .. } = old.keyring().load_tls()?;
        let signature = key
            .sign(&rpc::rejoin_message(csr_pem))
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
        Ok(rpc::RejoinProof {
            chain_pem: chain.iter().map(|c| moat_pki::cert_pem(c)).collect(),
            signature_b64: data_encoding::BASE64.encode(&signature),
        })
    }
}

/// The refusal of a manager whose root CA is not the one `token` pins.
///
/// When one of the roots the manager says rotations replaced is the
/// pinned one (its digest matches the token's, so it is the root the
/// token was made for) and names the same cluster as the manager's
/// current root, the token predates a root CA rotation of that cluster:
/// the message says so and how to get a current token. The manager is
/// not trusted yet, so what it sent only picks the message; the join is
/// refused either way and no secret has left this node.
fn ca_mismatch(remote: &str, token: &JoinToken, bundle: &rpc::CaBundle) -> NodeError {
    let cluster_of = |pem: &str| {
        TrustRoots::from_pem(pem.as_bytes())
            .ok()
            .and_then(|r| r.cluster_id().ok())
    };
    let current = cluster_of(&bundle.roots_pem);
    let rotated = current.is_some()
        && bundle
            .retired_roots_pem
            .iter()
            // No more than a manager sends: the peer is not trusted yet.
            .take(rpc::MAX_RETIRED_ROOTS_SERVED)
            .any(|old| token.verify_ca(old.as_bytes()).is_ok() && cluster_of(old) == current);
    if rotated {
        NodeError::new(
            ErrorKind::PermissionDenied,
            format!(
                "the manager at {remote} is in the cluster this join token was made for, but the \
                 cluster's root CA was rotated since: the token pins the old root, and tokens \
                 made before a root CA rotation no longer work"
            ),
        )
        .hint("get a current token: run `moat join-token worker` (or `moat join-token manager`) on a manager, then join with it")
    } else {
        NodeError::new(
            ErrorKind::PermissionDenied,
            format!(
                "the manager at {remote} is not part of the cluster this join token belongs to: \
                 its root CA does not match the CA digest in the token"
            ),
        )
        .hint("check the manager address, or get a current token from a manager of the cluster you mean to join: run `moat join-token worker` there")
    }
}

#[cfg(test)]
mod tests {
    use moat_pki::{ClusterId, OffsetDateTime, RootCa, RootOptions};

    use super::*;

    /// A root of `cluster`, as a manager serves it (the bytes tokens pin).
    fn root(cluster: ClusterId, generation: u32) -> String {
        let options = RootOptions {
            generation,
            ..RootOptions::default()
        };
        let ca = RootCa::generate(cluster, &options, OffsetDateTime::now_utc()).unwrap();
        TrustRoots::new(vec![ca.certificate().clone()])
            .unwrap()
            .to_pem()
    }

    fn refusal(token: &JoinToken, roots_pem: &str, retired: &[&str]) -> String {
        let bundle = rpc::CaBundle {
            roots_pem: roots_pem.to_owned(),
            retired_roots_pem: retired.iter().map(|r| (*r).to_owned()).collect(),
        };
        let e = ca_mismatch("10.0.0.1:4243", token, &bundle).into_api();
        format!("{} hint: {}", e.message, e.hint.unwrap_or_default())
    }

    /// A token made before a rotation is told so, and how to get a current
    /// one; a manager of another cluster, even one claiming to have
    /// retired the pinned root, is not part of the token's cluster.
    #[test]
    fn a_token_from_before_a_root_rotation_says_so() {
        let cluster = ClusterId::generate();
        let (old, new) = (root(cluster, 0), root(cluster, 1));
        let token = JoinToken::generate(old.as_bytes()).unwrap();

        let rotated = refusal(&token, &new, &[&old]);
        assert!(rotated.contains("root CA was rotated"), "{rotated}");
        assert!(rotated.contains("`moat join-token worker`"), "{rotated}");
        assert!(!rotated.contains(&*token.expose_secret()), "{rotated}");

        let other = root(ClusterId::generate(), 0);
        for (roots, retired) in [
            (&new, vec![]),
            (&other, vec![old.as_str()]),
            (&new, vec![other.as_str()]),
        ] {
            let e = refusal(&token, roots, &retired);
            assert!(
                e.contains("is not part of the cluster this join token belongs to"),
                "{e}"
            );
            assert!(!e.contains("rotated"), "{e}");
        }
    }
}
