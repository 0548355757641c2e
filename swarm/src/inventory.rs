//! The crypto inventory of a Swarm manager ([`SwarmInventory`]), from
//! what [`crate::open`] read: the files always, the raft store when it
//! could be decrypted. Whatever could not be read is `None` and named in
//! `not_checked`; nothing is guessed.

use std::collections::BTreeMap;

use moat_api::{
    RootCaInfo, SecretSummary, SwarmAutolock, SwarmCert, SwarmExternalCa, SwarmFile,
    SwarmInventory, SwarmJoinToken, SwarmKeyProtection, SwarmNode, SwarmRaft, SwarmRootRotation,
    SwarmService, TlsProbe,
};
use prost::Message as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::dir::{FileInfo, FileKind};
use crate::key::KeyProtection;
use crate::proto::{self, Cluster, ServiceMode};
use crate::record::RecordAlgorithm;
use crate::{Opened, certs};

/// Builds the inventory. `probe` is a live look at a manager's port, if
/// one was taken; `now` is when.
pub fn build(opened: &Opened, probe: Option<TlsProbe>, now: OffsetDateTime) -> SwarmInventory {
    let mut not_checked = Vec::new();
    let mut notices: Vec<String> = opened.notices().map(|n| n.to_string()).collect();
    let root = certs::first(&opened.root_ca_pem);
    let root_info = root.as_ref().map_or_else(
        || {
            notices.push("certificates/swarm-root-ca.crt holds no certificate that parses".into());
            RootCaInfo {
                subject: String::new(),
                algorithm: String::new(),
                signature_algorithm: String::new(),
                fingerprint: String::new(),
                serial: String::new(),
                not_before: String::new(),
                not_after: String::new(),
            }
        },
        certs::root_info,
    );
    let node_cert = certs::first(&opened.node_cert_pem);
    let node_swarm_cert = node_cert.as_ref().map_or_else(
        || {
            notices.push("certificates/swarm-node.crt holds no certificate that parses".into());
            certs::empty_cert()
        },
        |c| certs::swarm_cert(c, &opened.root_ca_pem),
    );
    let (cluster_id, node_id, node_role) =
        node_cert.as_ref().map(certs::identity).unwrap_or_default();

    let store = opened.store.as_ref();
    if store.is_none() {
        not_checked.push(
            "the raft store: nodes, join tokens, the CA key, autolock setting, certificate \
             lifetime policy, secrets and services (it is sealed under the unlock key)"
                .to_owned(),
        );
    }
    let cluster: Option<Cluster> = store.and_then(|s| s.store.cluster().ok().flatten());
    let spec = cluster.as_ref().and_then(|c| c.spec.as_ref());
    let ca_config = spec.and_then(|s| s.ca_config.as_ref());
    let root_ca = cluster.as_ref().and_then(|c| c.root_ca.as_ref());

    let autolock = autolock(opened, cluster.as_ref());
    let key_protection = key_protection(opened);

    let mut services: Vec<SwarmService> = Vec::new();
    let mut secrets: Vec<SecretSummary> = Vec::new();
    let mut nodes: Vec<SwarmNode> = Vec::new();
    if let Some(s) = store {
        let svc = s.store.services().unwrap_or_default();
        let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for service in &svc {
            let Some(spec) = &service.spec else { continue };
            let name = spec
                .annotations
                .as_ref()
                .map(|a| a.name.clone())
                .unwrap_or_default();
            let container = spec
                .task
                .as_ref()
                .and_then(|t| t.runtime.as_ref())
                .and_then(|r| match r {
                    proto::TaskRuntime::Container(c) => Some(c),
                    _ => None,
                });
            let (mode, replicas) = match &spec.mode {
                Some(ServiceMode::Replicated(r)) => ("replicated", Some(r.replicas)),
                Some(ServiceMode::Global(_)) => ("global", None),
                Some(ServiceMode::ReplicatedJob(_)) => ("replicated-job", None),
                Some(ServiceMode::GlobalJob(_)) => ("global-job", None),
                None => ("unknown", None),
            };
            let mut out = SwarmService {
                id: service.id.clone(),
                name: name.clone(),
                mode: mode.into(),
                replicas,
                image: String::new(),
                secrets: Vec::new(),
                configs: Vec::new(),
                env_vars: 0,
                registry_auth: false,
            };
            if let Some(c) = container {
                out.image = c.image.clone();
                out.env_vars = c.env.len() as u64;
                out.registry_auth = c
                    .pull_options
                    .as_ref()
                    .is_some_and(|p| !p.registry_auth.is_empty());
                for r in &c.secrets {
                    out.secrets.push(r.secret_name.clone());
                    uses.entry(format!("secret/{}", r.secret_id))
                        .or_default()
                        .push(name.clone());
                }
                for r in &c.configs {
                    out.configs.push(r.config_name.clone());
                    uses.entry(format!("config/{}", r.config_id))
                        .or_default()
                        .push(name.clone());
                }
            }
            services.push(out);
        }
        services.sort_by(|a, b| a.name.cmp(&b.name));
        for secret in s.store.secrets().unwrap_or_default() {
            let spec = secret.spec.as_ref();
            secrets.push(SecretSummary {
                kind: "secret".into(),
                name: spec
                    .and_then(|s| s.annotations.as_ref())
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
                version: meta_version(secret.meta.as_ref()),
                versions_kept: 1,
                size: spec.map_or(0, |s| s.data.len() as u64),
                created_at: meta_time(secret.meta.as_ref(), true),
                updated_at: meta_time(secret.meta.as_ref(), false),
                used_by: uses
                    .get(&format!("secret/{}", secret.id))
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        for config in s.store.configs().unwrap_or_default() {
            let spec = config.spec.as_ref();
            secrets.push(SecretSummary {
                kind: "config".into(),
                name: spec
                    .and_then(|s| s.annotations.as_ref())
                    .map(|a| a.name.clone())
                    .unwrap_or_default(),
                version: meta_version(config.meta.as_ref()),
                versions_kept: 1,
                size: spec.map_or(0, |s| s.data.len() as u64),
                created_at: meta_time(config.meta.as_ref(), true),
                updated_at: meta_time(config.meta.as_ref(), false),
                used_by: uses
                    .get(&format!("config/{}", config.id))
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        secrets.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        for n in s.store.nodes().unwrap_or_default() {
            nodes.push(node(&n, opened, &node_id, &node_swarm_cert));
        }
    }

    let store_root_pem = root_ca.map(|r| r.ca_cert.as_slice());
    let root_ca_matches_store = store_root_pem.map(|pem| match (certs::first(pem), &root) {
        (Some(a), Some(b)) => a.der == b.der,
        _ => false,
    });
    let root_rotation =
        root_ca
            .and_then(|r| r.root_rotation.as_ref())
            .map(|rot| SwarmRootRotation {
                new_root: certs::first(&rot.ca_cert)
                    .as_ref()
                    .map_or_else(certs::root_info_unparsed, certs::root_info),
                cross_signed: !rot.cross_signed_ca_cert.is_empty(),
            });
    let root_ca_key_in_store = root_ca.map(|r| !r.ca_key.is_empty());
    let root_ca_key_format = root_ca
        .filter(|r| !r.ca_key.is_empty())
        .map(|r| pem_label(&r.ca_key));

    let join_tokens = match (store, root_ca) {
        (Some(_), Some(r)) => join_tokens(r, &opened.token_changes, cluster.as_ref()),
        _ => Vec::new(),
    };

    let raft = raft(opened, spec);
    let files = opened.files.iter().filter_map(file_row).collect();

    let probe_chain_from_root = probe.as_ref().and_then(|p| {
        let leaf = p.chain.first()?;
        Some(certs::pem_signed_by(&leaf.pem, &opened.root_ca_pem))
    });

    SwarmInventory {
        generated_at: now.format(&Rfc3339).unwrap_or_default(),
        state_dir: opened.dir.root().display().to_string(),
        cluster_id,
        node_id,
        node_role,
        unlock_key_given: opened.key_given,
        store_read: store.is_some(),
        not_checked,
        root_ca: root_info,
        root_ca_matches_store,
        root_rotation,
        root_ca_key_in_store,
        root_ca_key_format,
        node_cert: node_swarm_cert,
        nodes,
        cert_expiry_seconds: ca_config
            .and_then(|c| c.node_cert_expiry.as_ref())
            .map(|d| u64::try_from(d.seconds).unwrap_or(0))
            .or_else(|| store.map(|_| DEFAULT_CERT_EXPIRY)),
        external_cas: ca_config
            .map(|c| {
                c.external_cas
                    .iter()
                    .map(|e| SwarmExternalCa {
                        protocol: match e.protocol {
                            0 => "cfssl".into(),
                            n => format!("unknown ({n})"),
                        },
                        url: e.url.clone(),
                        options: e.options.keys().cloned().collect(),
                        has_ca_cert: !e.ca_cert.is_empty(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        signing_ca_supplied: store
            .map(|_| ca_config.is_some_and(|c| !c.signing_ca_cert.is_empty())),
        force_rotate: store.map(|_| ca_config.map_or(0, |c| c.force_rotate)),
        join_tokens,
        autolock,
        key_protection,
        raft,
        fips: cluster.as_ref().map(|c| c.fips),
        secrets,
        services,
        files,
        probe,
        probe_chain_from_root,
        notices,
    }
}

/// Swarm's node certificate lifetime when the cluster spec sets none
/// (2160 h, 90 days).
pub const DEFAULT_CERT_EXPIRY: u64 = 90 * 86_400;

fn node(n: &proto::Node, opened: &Opened, this_node: &str, this_cert: &SwarmCert) -> SwarmNode {
    let desc = n.description.as_ref();
    let role = match n.role {
        0 => "worker".to_owned(),
        1 => "manager".to_owned(),
        r => format!("unknown ({r})"),
    };
    let availability = match n.spec.as_ref().map_or(0, |s| s.availability) {
        0 => "active".to_owned(),
        1 => "pause".to_owned(),
        2 => "drain".to_owned(),
        a => format!("unknown ({a})"),
    };
    let status = match n.status.as_ref().map_or(0, |s| s.state) {
        0 => "unknown".to_owned(),
        1 => "down".to_owned(),
        2 => "ready".to_owned(),
        3 => "disconnected".to_owned(),
        s => format!("unknown ({s})"),
    };
    let manager_status = n.manager_status.as_ref().map_or_else(String::new, |m| {
        if m.leader {
            "leader".to_owned()
        } else {
            match m.reachability {
                1 => "unreachable".to_owned(),
                2 => "reachable".to_owned(),
                _ => "unknown".to_owned(),
            }
        }
    });
    let stored = n
        .certificate
        .as_ref()
        .filter(|c| !c.certificate.is_empty())
        .and_then(|c| certs::first(&c.certificate));
    let (cert, cert_source) = match stored {
        Some(c) => (Some(certs::swarm_cert(&c, &opened.root_ca_pem)), "store"),
        None if n.id == this_node => (Some(this_cert.clone()), "file"),
        None => (None, "none"),
    };
    SwarmNode {
        id: n.id.clone(),
        hostname: desc.map(|d| d.hostname.clone()).unwrap_or_default(),
        role,
        availability,
        status,
        manager_status,
        cert,
        cert_source: cert_source.into(),
        fips: desc.is_some_and(|d| d.fips),
    }
}

fn autolock(opened: &Opened, cluster: Option<&Cluster>) -> SwarmAutolock {
    let key = &opened.node_key;
    let key_file_encrypted = key.pem_tag().contains("ENCRYPTED")
        || matches!(key.protection(), KeyProtection::LegacyRfc1423 { .. });
    let data_key_wrapped = matches!(
        key.raft_dek_algorithm(),
        Some(a) if a != RecordAlgorithm::None
    );
    let cluster_setting = cluster.map(|c| {
        c.spec
            .as_ref()
            .and_then(|s| s.encryption_config.as_ref())
            .is_some_and(|e| e.auto_lock_managers)
    });
    let manager_key = cluster.and_then(|c| {
        c.unlock_keys
            .iter()
            .find(|k| k.subsystem == "swarm-manager")
    });
    let unlock_key_in_store = cluster.map(|_| manager_key.is_some());
    let given_key_is_current = opened.given_key_is_current;
    let mut places = vec![key_file_encrypted, data_key_wrapped];
    places.extend(cluster_setting);
    places.extend(unlock_key_in_store);
    let consistent = places.iter().all(|&p| p) || places.iter().all(|&p| !p);
    SwarmAutolock {
        key_file_encrypted,
        data_key_wrapped,
        cluster_setting,
        unlock_key_in_store,
        given_key_is_current,
        kek_version: key.kek_version(),
        data_key_readable_without_key: key.dek_readable_without_key(),
        pending_data_key: key.raft_dek_pending_algorithm().is_some(),
        needs_rotation: key.needs_rotation(),
        consistent,
        on: places.iter().all(|&p| p),
    }
}

fn key_protection(opened: &Opened) -> SwarmKeyProtection {
    let key = &opened.node_key;
    let (scheme, weak) = match key.protection() {
        KeyProtection::Plain => ("none".to_owned(), false),
        KeyProtection::Pkcs8Pbes2 {
            kdf,
            iterations,
            cipher,
        } => (
            format!("PKCS#8 PBES2: {kdf}, {iterations} iterations, {cipher}"),
            false,
        ),
        KeyProtection::LegacyRfc1423 { cipher } => (
            format!("legacy PEM encryption (RFC 1423, MD5 key derivation), {cipher}"),
            true,
        ),
        KeyProtection::Unknown(what) => (format!("unknown ({what})"), false),
    };
    SwarmKeyProtection {
        pem_type: key.pem_tag().to_owned(),
        scheme,
        weak,
        matches_cert: opened.tls_key_matches_cert,
    }
}

fn raft(opened: &Opened, spec: Option<&proto::ClusterSpec>) -> SwarmRaft {
    let log = &opened.log;
    let raft_spec = spec.and_then(|s| s.raft.as_ref());
    let last_index = log
        .entries
        .last()
        .map_or(log.snapshot.as_ref().map_or(0, |s| s.index), |e| e.index);
    SwarmRaft {
        algorithms: log
            .algorithms_seen
            .iter()
            .map(|a| algorithm_name(*a))
            .collect(),
        wal_segments: opened.wal_segments as u64,
        entries: log.entries.len() as u64,
        last_index,
        commit_index: log.hard_state.commit,
        uncommitted: log.entries.iter().filter(|e| !e.committed).count() as u64,
        snapshot_index: log.snapshot.as_ref().map(|s| s.index),
        snapshot_bytes: log.snapshot.as_ref().and_then(|s| {
            opened
                .files
                .iter()
                .find(|f| f.rel_path == s.file)
                .map(|f| f.size)
        }),
        snapshot_interval: raft_spec.map(|r| r.snapshot_interval),
        keep_old_snapshots: raft_spec.map(|r| r.keep_old_snapshots),
        members: log
            .members
            .iter()
            .map(|m| format!("{} ({})", m.addr, m.node_id))
            .collect(),
    }
}

/// A record algorithm as the report names it.
pub fn algorithm_name(a: RecordAlgorithm) -> String {
    match a {
        RecordAlgorithm::None => "none (not encrypted)".into(),
        RecordAlgorithm::SecretboxSalsa20Poly1305 => "secretbox (XSalsa20-Poly1305)".into(),
        RecordAlgorithm::FernetAes128Cbc => "fernet (AES-128-CBC + HMAC-SHA256)".into(),
        RecordAlgorithm::Unknown(n) => format!("unknown ({n})"),
    }
}

/// The join tokens: fingerprints, whether their CA digest is the current
/// root's, and what the log tells of their age.
fn join_tokens(
    root: &proto::RootCa,
    changes: &BTreeMap<String, String>,
    cluster: Option<&Cluster>,
) -> Vec<SwarmJoinToken> {
    let Some(tokens) = &root.join_tokens else {
        return Vec::new();
    };
    let created = cluster.map(|c| meta_time(c.meta.as_ref(), true));
    [("worker", &tokens.worker), ("manager", &tokens.manager)]
        .into_iter()
        .filter(|(_, t)| !t.is_empty())
        .map(|(role, token)| {
            let (format, digest) = token_parts(token);
            // The digest is base 36 of SHA-256 over the root's PEM bytes.
            let want = crate::certs::token_digest(&root.ca_cert);
            let ca_digest_matches = digest.is_some_and(|d| d == want);
            SwarmJoinToken {
                role: role.into(),
                format,
                fingerprint: crate::certs::short_sha256(token.as_bytes()),
                ca_digest_matches,
                changed_at: changes.get(role).cloned(),
                made_at_or_after: if changes.contains_key(role) {
                    None
                } else {
                    created.clone()
                },
            }
        })
        .collect()
}

/// A token's format (`SWMTKN-1`) and CA digest part; never its secret.
fn token_parts(token: &str) -> (String, Option<&str>) {
    let parts: Vec<&str> = token.split('-').collect();
    match parts.as_slice() {
        ["SWMTKN", "1", digest, _secret] => ("SWMTKN-1".into(), Some(digest)),
        ["SWMTKN", "2", "1", digest, _secret] => ("SWMTKN-2-1".into(), Some(digest)),
        _ => ("unknown".into(), None),
    }
}

/// For each role, when the log after the snapshot shows its join token
/// set to the value it has now: that cluster object's update time (its
/// creation time for the entry that created it). A role whose token the
/// log does not show changing is absent.
pub(crate) fn token_changes(
    log: &crate::raftlog::RaftLog,
    snapshot_cluster: Option<&Cluster>,
) -> BTreeMap<String, String> {
    let tokens = |c: &Cluster| {
        c.root_ca
            .as_ref()
            .and_then(|r| r.join_tokens.as_ref())
            .map(|t| (t.worker.clone(), t.manager.clone()))
            .unwrap_or_default()
    };
    let mut last = snapshot_cluster.map(tokens).unwrap_or_default();
    let mut changed: BTreeMap<String, String> = BTreeMap::new();
    for entry in &log.entries {
        let Some(plain) = &entry.plaintext else {
            continue;
        };
        // Only the cluster actions are decoded: prost skips the others
        // (nodes, tasks) without building them.
        let Ok(req) = ClusterActions::decode(plain.as_slice()) else {
            continue;
        };
        for action in &req.action {
            let Some(c) = &action.cluster else {
                continue;
            };
            let now = tokens(c);
            let created = action.action == 1;
            let at = meta_time(c.meta.as_ref(), created);
            if now.0 != last.0 {
                changed.insert("worker".into(), at.clone());
            }
            if now.1 != last.1 {
                changed.insert("manager".into(), at);
            }
            last = now;
        }
    }
    changed
}

/// The cluster object of a snapshot's plaintext (`api.Snapshot`), decoded
/// alone: prost skips the other objects without building them.
pub(crate) fn snapshot_cluster(plaintext: &[u8]) -> Option<Cluster> {
    let snap = SnapshotClusters::decode(plaintext).ok()?;
    crate::store::pick_cluster(snap.store?.clusters)
}

/// An `api.Snapshot` seen only for its cluster objects.
#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotClusters {
    #[prost(message, optional, tag = "3")]
    store: Option<StoreClusters>,
}

/// A `StoreSnapshot` seen only for its cluster objects (field 5).
#[derive(Clone, PartialEq, prost::Message)]
struct StoreClusters {
    #[prost(message, repeated, tag = "5")]
    clusters: Vec<Cluster>,
}

/// An `InternalRaftRequest` seen only for its actions on the cluster
/// object (`StoreAction` field 6).
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterActions {
    #[prost(message, repeated, tag = "2")]
    action: Vec<ClusterAction>,
}

/// A `StoreAction`'s kind and its cluster, if that is its target.
#[derive(Clone, PartialEq, prost::Message)]
struct ClusterAction {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(message, optional, tag = "6")]
    cluster: Option<Cluster>,
}

fn meta_version(meta: Option<&proto::Meta>) -> u64 {
    meta.and_then(|m| m.version.as_ref()).map_or(0, |v| v.index)
}

/// A Meta's creation (or update) time as RFC 3339; empty if absent.
fn meta_time(meta: Option<&proto::Meta>, created: bool) -> String {
    let t = meta.and_then(|m| {
        if created {
            m.created_at.as_ref()
        } else {
            m.updated_at.as_ref().or(m.created_at.as_ref())
        }
    });
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A PEM block's label (`EC PRIVATE KEY`), or `not PEM`.
fn pem_label(bytes: &[u8]) -> String {
    pem::parse(bytes).map_or_else(|_| "not PEM".into(), |p| p.tag().to_owned())
}

/// The modes Swarm gives its files (docs: DOCKER-SWARM-FORMAT §1), and
/// whether a file is more open: only files that hold keys or state.
fn file_row(f: &FileInfo) -> Option<SwarmFile> {
    let p = f.rel_path.as_str();
    let expected: u32 = match (f.kind, p) {
        (FileKind::Dir, "." | "raft" | "raft/wal-v3-encrypted" | "raft/snap-v3-encrypted") => 0o700,
        (FileKind::Dir, "certificates") => 0o755,
        (FileKind::File, "certificates/swarm-node.key") => 0o600,
        (FileKind::File, "certificates/swarm-node.crt" | "certificates/swarm-root-ca.crt") => 0o644,
        (FileKind::File, "docker-state.json" | "state.json") => 0o600,
        (FileKind::File, p) if p.starts_with("raft/wal") => 0o600,
        (FileKind::File, p) if p.starts_with("raft/snap") => 0o644,
        _ => return None,
    };
    Some(SwarmFile {
        path: p.to_owned(),
        mode: format!("{:04o}", f.mode),
        size: f.size,
        expected: format!("{expected:04o}"),
        // Read or write by group or others beyond what Swarm sets; a
        // file Swarm makes world-readable (a certificate) is no finding.
        too_open: f.mode & 0o077 & !expected != 0,
    })
}
