//! `moat init`: a new cluster with this node as its first manager — a
//! new root CA, the standing join tokens, the audit key, and (with
//! `--autolock`) an unlock key that seals everything from the start and
//! is never written to disk.

use std::time::Duration;

use moat_api::{ErrorKind, InitRequest, InitResponse, SecretString};
use moat_lock::UnlockKey;
use moat_pki::{
    ClusterId, KeyAlgorithm, NodeId, PrivateKey, Role, RootCa, RootOptions, TrustRoots, fingerprint,
};
use moat_store::model::{CaMaterial, Command, JoinTokens, NodeRecord, Policy, Secret};
use moat_tokens::JoinToken;

use super::{Daemon, Phase};
use crate::addr::{advertise_addr, normalize_listen};
use crate::error::NodeError;
use crate::files::{self, NodeFile};
use crate::member::{Member, operator};
use crate::rpc::{self};
use crate::wire::cert_expiry;

impl Daemon {
    /// `moat init`.
    pub(crate) async fn init(&self, req: InitRequest) -> Result<InitResponse, NodeError> {
        let _guard = self.lifecycle.lock().await;
        if req.force_new_cluster {
            return self.force_new_cluster(req).await;
        }
        self.ensure_inactive().await?;
        let expiry = cert_expiry(req.cert_expiry_seconds)?;
        let result = self.init_inner(req, expiry).await;
        if result.is_err() {
            self.abandon().await;
        }
        result
    }

    async fn init_inner(
        &self,
        req: InitRequest,
        expiry: Duration,
    ) -> Result<InitResponse, NodeError> {
        let now = self.clock.now();
        let cluster = ClusterId::generate();
        let id = NodeId::generate();
        let internal =
            |e: &dyn std::fmt::Display| NodeError::new(ErrorKind::Internal, e.to_string());
        let root =
            RootCa::generate(cluster, &RootOptions::default(), now).map_err(|e| internal(&e))?;
        let roots = TrustRoots::new(vec![root.certificate().clone()]).map_err(|e| internal(&e))?;
        let bundle = roots.to_pem();
        let key = PrivateKey::generate(KeyAlgorithm::default()).map_err(|e| internal(&e))?;
        let csr = moat_pki::VerifiedCsr::from_der(key.csr().map_err(|e| internal(&e))?.as_ref())
            .map_err(|e| internal(&e))?;
        let cert_expiry = moat_pki::CertExpiry::new(expiry).map_err(|e| internal(&e))?;
        let issued = root
            .issue(&csr, id, Role::Manager, cert_expiry, now)
            .map_err(|e| internal(&e))?;
        let tokens = JoinTokens {
            worker: JoinToken::generate(bundle.as_bytes()).map_err(|e| internal(&e))?,
            manager: JoinToken::generate(bundle.as_bytes()).map_err(|e| internal(&e))?,
            worker_issued_at: now.unix_timestamp(),
            manager_issued_at: now.unix_timestamp(),
        };
        let worker_token = SecretString::new(tokens.worker.expose_secret().to_string());
        let ca = CaMaterial {
            root_cert_pem: bundle.clone(),
            root_key_pkcs8: Secret::new(data_encoding::BASE64.encode(&root.key().to_pkcs8_der())),
        };

        // With autolock the cluster's unlock key seals everything from the
        // start and is never written to disk.
        let kek = if req.autolock {
            UnlockKey::generate().map_err(|e| internal(&e))?
        } else {
            files::load_or_create_kek(&self.layout)?
        };
        let unlock_key = req.autolock.then(|| kek.expose_for_operator());
        let tls = self.tls_context(cluster, roots.clone());
        let listen = normalize_listen(&req.listen_addr)?;
        let file = NodeFile::new(
            id,
            cluster,
            listen.clone(),
            String::new(),
            Vec::new(),
            expiry.as_secs(),
        );
        let node = Member::new(
            file,
            self.layout.clone(),
            tls,
            kek,
            self.journal.clone(),
            self.clock.clone(),
        );
        node.install_credentials(&moat_pki::cert_pem(&issued.der), key)?;
        let bound = crate::roles::start_manager(&node, &listen).await?;
        let advertise = advertise_addr(req.advertise_addr.as_deref(), bound)?;
        // The phase is set before Raft runs so a failure below is cleaned up.
        *self.phase.write().await = Phase::Member {
            node: node.clone(),
            agent: None,
        };
        let m = node.require_manager()?;
        m.raft
            .initialize(std::collections::BTreeMap::from([(
                id,
                openraft::BasicNode::new(advertise.clone()),
            )]))
            .await
            .map_err(|e| internal(&e))?;
        m.raft
            .wait(Some(Duration::from_secs(10)))
            .current_leader(id, "this manager to lead its new cluster")
            .await
            .map_err(|e| internal(&e))?;
        let root_fingerprint = fingerprint(root.certificate());
        node.propose_audited(
            Command::Init {
                cluster_id: cluster,
                policy: Policy {
                    cert_expiry_secs: expiry.as_secs(),
                    autolock: false,
                    token_ttl_secs: None,
                },
                ca,
                join_tokens: tokens,
            },
            node.ev(
                operator(),
                moat_audit::Action::CLUSTER_INIT,
                format!("cluster:{cluster}"),
            )
            .detail("root_ca", &root_fingerprint)
            .detail("cert_expiry_seconds", expiry.as_secs())
            .detail("autolock", unlock_key.is_some())
            .detail("address", &advertise),
        )
        .await
        .map_err(NodeError::from)?;
        node.propose(Command::SetAuditKey(crate::member::new_audit_key()?))
            .await
            .map_err(NodeError::from)?;
        if let Some(text) = &unlock_key {
            node.propose_audited(
                Command::SetAutolock {
                    key: Some(Secret::new(text.as_str())),
                    now: now.unix_timestamp(),
                },
                node.ev(operator(), moat_audit::Action::AUTOLOCK_ENABLE, "cluster"),
            )
            .await
            .map_err(NodeError::from)?;
        }
        node.propose(Command::PutNode(NodeRecord {
            id,
            hostname: self.hostname.clone(),
            role: Role::Manager,
            address: advertise.clone(),
            labels: Default::default(),
            cert_serial: issued.serial.clone(),
            cert_not_after: issued.not_after.unix_timestamp(),
            cert_issuer: root_fingerprint.clone(),
            availability: Default::default(),
            ready: true,
        }))
        .await
        .map_err(NodeError::from)?;
        node.record_cert(
            id,
            Role::Manager,
            &issued,
            root_fingerprint.clone(),
            moat_audit::Action::CERT_ISSUE,
        )
        .await
        .map_err(NodeError::from)?;
        // node.json last: from here on a restart brings the cluster back.
        let listen_file = if listen.ends_with(":0") {
            bound.to_string()
        } else {
            listen
        };
        node.update_node_file(|f| {
            f.listen_addr = listen_file;
            f.advertise_addr = advertise.clone();
            f.managers = vec![rpc::Peer {
                id,
                addr: advertise.clone(),
            }];
            f.key_generation = u32::from(unlock_key.is_some());
        })?;
        self.run_agent(node).await;
        tracing::info!(node = %id, cluster = %cluster, addr = %advertise, "cluster initialized");
        Ok(InitResponse {
            node_id: id.to_string(),
            cluster_id: cluster.to_string(),
            advertise_addr: advertise,
            worker_token,
            unlock_key: unlock_key.map(|k| SecretString::new(k.to_string())),
        })
    }
}
