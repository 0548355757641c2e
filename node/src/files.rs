//! A node's state directory: what is in it, and how each file is written
//! so that a crash leaves either the old or the new version.
//!
//! ```text
//! DIR/daemon.lock        held (flock) by the running daemon
//! DIR/moat.sock          the control socket (mode 0600; DIR is 0700)
//! DIR/node.json          who this node is and which managers it knows; written
//!                        last by init and as soon as the cluster admitted a
//!                        joining node, so its absence means "not in a
//!                        cluster"; anything else found without it is set
//!                        aside in DIR/abandoned-<time>/
//! DIR/unlock.key         the key that seals this node's keys (0600; autolock off)
//! DIR/certs/node.sealed  the node's certificate chain, private key and trusted
//!                        roots, sealed together (purpose "node-tls") so they
//!                        always match and cannot be swapped
//! DIR/certs/node.crt     the certificate chain in PEM, for people (not read back)
//! DIR/certs/ca.crt       the trusted root bundle in PEM, for people (the sealed
//!                        copy is the one read back)
//! DIR/store/             managers: the encrypted Raft store (moat-store)
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use moat_api::ErrorKind;
use moat_lock::{Aad, KeySource, UnlockKey};
use moat_pki::{CertificateDer, ClusterId, NodeId, PrivateKey, TrustRoots};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::error::NodeError;
use crate::rpc::Peer;

const NODE_FILE_FORMAT: u32 = 1;

/// What to do when a node's state cannot be read at start-up.
pub(crate) const START_OVER_HINT: &str = "restore the state directory from a backup; or move it aside, start the daemon with an empty one, and join the cluster again (remove the old node with `moat node rm` on a manager)";
const TLS_PURPOSE: &str = "node-tls";

/// The paths of one state directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.dir.join("daemon.lock")
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join("moat.sock")
    }

    pub(crate) fn node_file(&self) -> PathBuf {
        self.dir.join("node.json")
    }

    pub(crate) fn kek_file(&self) -> PathBuf {
        self.dir.join("unlock.key")
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    pub(crate) fn sealed_tls_file(&self) -> PathBuf {
        self.certs_dir().join("node.sealed")
    }

    fn chain_file(&self) -> PathBuf {
        self.certs_dir().join("node.crt")
    }

    fn roots_file(&self) -> PathBuf {
        self.certs_dir().join("ca.crt")
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// The executor's directory: task records and their output.
    pub(crate) fn tasks_dir(&self) -> PathBuf {
        self.dir.join("tasks")
    }

    /// Creates the directory (mode 0700) and takes the daemon lock, so two
    /// daemons never share a state directory.
    pub(crate) fn lock(&self) -> Result<File, NodeError> {
        create_private_dir(&self.dir)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_file())
            .map_err(|e| io_error(&format!("opening {}", self.lock_file().display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(NodeError::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "another moat daemon is running with state directory {}",
                    self.dir.display()
                ),
            )
            .hint("stop it first, or give this daemon its own --state-dir")),
            Err(fs::TryLockError::Error(e)) => Err(io_error("locking the state directory", e)),
        }
    }

    /// Removes everything that makes this node a cluster member, node file
    /// first (so a crash half-way leaves a node that is simply not in a
    /// cluster).
    pub(crate) fn wipe(&self) -> Result<(), NodeError> {
        remove_file(&self.node_file())?;
        for dir in [self.certs_dir(), self.store_dir(), self.tasks_dir()] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&format!("removing {}", dir.display()), e)),
            }
        }
        remove_file(&self.kek_file())?;
        sync_dir(&self.dir)
    }

    /// Moves keys, certificates and a store left without a node.json into
    /// `DIR/abandoned-<unix time>/` (`now`, Unix seconds); returns where,
    /// if anything was moved.
    pub(crate) fn set_aside_leftovers(&self, now: i64) -> Result<Option<PathBuf>, NodeError> {
        let leftovers: Vec<PathBuf> = [self.certs_dir(), self.store_dir(), self.kek_file()]
            .into_iter()
            .filter(|p| p.exists())
            .collect();
        if leftovers.is_empty() {
            return Ok(None);
        }
        let aside = self.dir.join(format!("abandoned-{now}"));
        create_private_dir(&aside)?;
        for path in leftovers {
            let name = path.file_name().unwrap_or_default();
            fs::rename(&path, aside.join(name))
                .map_err(|e| io_error(&format!("moving {} aside", path.display()), e))?;
        }
        sync_dir(&self.dir)?;
        Ok(Some(aside))
    }

    pub(crate) fn has_node_file(&self) -> bool {
        self.node_file().exists()
    }
}

/// Who this node is: `DIR/node.json`. Not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeFile {
    pub(crate) format: u32,
    pub(crate) node_id: NodeId,
    pub(crate) cluster_id: ClusterId,
    /// The address the cluster listener binds (managers).
    pub(crate) listen_addr: String,
    /// The address other nodes reach this one at.
    pub(crate) advertise_addr: String,
    /// Every manager this node knows, for failover.
    pub(crate) managers: Vec<Peer>,
    /// Certificate lifetime policy last heard, seconds.
    #[serde(default)]
    pub(crate) cert_expiry_secs: u64,
    /// The autolock generation (`unlock_key_version` in the store) this
    /// node's key files follow; 0 before any.
    #[serde(default)]
    pub(crate) key_generation: u32,
    /// Laid out by `moat restore`: the store waits for
    /// `moat init --force-new-cluster` before Raft starts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) restored: bool,
    /// The store's data key must be rotated (it was sealed under a key kept
    /// on disk before autolock was turned on); cleared once done, so a
    /// crash before then resumes it at the next start.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) dek_rotation_due: bool,
}

impl NodeFile {
    pub(crate) fn new(
        node_id: NodeId,
        cluster_id: ClusterId,
        listen_addr: String,
        advertise_addr: String,
        managers: Vec<Peer>,
        cert_expiry_secs: u64,
    ) -> Self {
        Self {
            format: NODE_FILE_FORMAT,
            node_id,
            cluster_id,
            listen_addr,
            advertise_addr,
            managers,
            cert_expiry_secs,
            key_generation: 0,
            restored: false,
            dek_rotation_due: false,
        }
    }

    pub(crate) fn load(layout: &Layout) -> Result<Self, NodeError> {
        let path = layout.node_file();
        let bytes =
            fs::read(&path).map_err(|e| io_error(&format!("reading {}", path.display()), e))?;
        let file: NodeFile = serde_json::from_slice(&bytes).map_err(|e| {
            NodeError::new(
                ErrorKind::Internal,
                format!("{} is damaged: {e}", path.display()),
            )
            .hint(START_OVER_HINT)
        })?;
        if file.format != NODE_FILE_FORMAT {
            return Err(NodeError::new(
                ErrorKind::Internal,
                format!(
                    "{} has format {}, this moat understands {NODE_FILE_FORMAT}",
                    path.display(),
                    file.format
                ),
            )
            .hint("run the moat version that wrote it"));
        }
        Ok(file)
    }

    pub(crate) fn save(&self, layout: &Layout) -> Result<(), NodeError> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| NodeError::new(ErrorKind::Internal, format!("encoding node.json: {e}")))?;
        moat_lock::write_file_atomic(layout.node_file(), &json)
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))
    }
}

#[derive(Serialize, Deserialize)]
struct SealedTls {
    chain_pem: String,
    /// Zeroized on drop.
    key_pkcs8_b64: String,
    /// The trusted roots, sealed with the key so that a root bundle
    /// swapped on disk is noticed.
    roots_pem: String,
}

impl Drop for SealedTls {
    fn drop(&mut self) {
        self.key_pkcs8_b64.zeroize();
    }
}

/// Seals the node's chain and key together under `kek`, and writes the
/// chain and the roots in PEM beside them.
pub(crate) fn save_tls(
    layout: &Layout,
    kek: &UnlockKey,
    cluster: &ClusterId,
    node: &NodeId,
    chain_pem: &str,
    key: &PrivateKey,
    roots: &TrustRoots,
) -> Result<(), NodeError> {
    create_private_dir(&layout.certs_dir())?;
    let sealed = SealedTls {
        chain_pem: chain_pem.to_string(),
        key_pkcs8_b64: BASE64.encode(&key.to_pkcs8_der()),
        roots_pem: roots.to_pem(),
    };
    let json = Zeroizing::new(
        serde_json::to_vec(&sealed)
            .map_err(|e| NodeError::new(ErrorKind::Internal, format!("encoding TLS keys: {e}")))?,
    );
    drop(sealed);
    let (cluster_s, node_s) = (cluster.to_string(), node.to_string());
    let aad = tls_aad(&cluster_s, &node_s);
    moat_lock::seal_to_file(
        layout.sealed_tls_file(),
        KeySource::Key(kek),
        1,
        &aad,
        &json,
    )
    .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
    write_public(&layout.chain_file(), chain_pem.as_bytes())?;
    write_public(&layout.roots_file(), roots.to_pem().as_bytes())
}

fn tls_aad<'a>(cluster: &'a str, node: &'a str) -> Aad<'a> {
    Aad::new(TLS_PURPOSE, cluster, node)
}

/// Whether `kek` opens the sealed TLS keys `blob` of `node` (a node's
/// file, or the copy in a backup).
pub(crate) fn tls_blob_opens(
    blob: &[u8],
    kek: &UnlockKey,
    cluster: &ClusterId,
    node: &NodeId,
) -> Result<bool, moat_lock::LockError> {
    let (cluster_s, node_s) = (cluster.to_string(), node.to_string());
    match moat_lock::unseal(KeySource::Key(kek), &tls_aad(&cluster_s, &node_s), blob) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.root(), moat_lock::LockError::WrongKey) => Ok(false),
        Err(e) => Err(e),
    }
}

/// This node's sealed TLS keys re-sealed from `old` to `new` (not written).
pub(crate) fn reseal_tls(
    layout: &Layout,
    old: &UnlockKey,
    new: &UnlockKey,
    cluster: &ClusterId,
    node: &NodeId,
) -> Result<Vec<u8>, NodeError> {
    let (cluster_s, node_s) = (cluster.to_string(), node.to_string());
    let aad = tls_aad(&cluster_s, &node_s);
    let unsealed = moat_lock::unseal_file(layout.sealed_tls_file(), KeySource::Key(old), &aad)
        .map_err(|e| NodeError::new(ErrorKind::Internal, format!("re-sealing TLS keys: {e}")))?;
    moat_lock::seal(KeySource::Key(new), 1, &aad, &unsealed.plaintext)
        .map_err(|e| NodeError::new(ErrorKind::Internal, format!("re-sealing TLS keys: {e}")))
}

/// What [`save_tls`] sealed: the chain (leaf first), its key and the
/// trusted roots.
pub(crate) struct TlsFiles {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKey,
    pub(crate) roots: TrustRoots,
}

/// Reads back what [`save_tls`] wrote; a key that does not open it is an
/// error naming the file (see [`open_tls`] to tell a wrong key apart).
pub(crate) fn load_tls(
    layout: &Layout,
    kek: &UnlockKey,
    cluster: &ClusterId,
    node: &NodeId,
) -> Result<TlsFiles, NodeError> {
    open_tls(layout, kek, cluster, node)?
        .ok_or_else(|| damaged_tls(layout, "the key it is sealed under is not this node's key"))
}

/// Opens this node's sealed TLS files with `kek`, reading the file once:
/// `None` if `kek` is not the key they are sealed under (a wrong unlock
/// key), an error naming the file if it is missing, damaged or altered.
pub(crate) fn open_tls(
    layout: &Layout,
    kek: &UnlockKey,
    cluster: &ClusterId,
    node: &NodeId,
) -> Result<Option<TlsFiles>, NodeError> {
    let (cluster_s, node_s) = (cluster.to_string(), node.to_string());
    let aad = tls_aad(&cluster_s, &node_s);
    let unsealed = match moat_lock::unseal_file(layout.sealed_tls_file(), KeySource::Key(kek), &aad)
    {
        Ok(u) => u,
        Err(e) if matches!(e.root(), moat_lock::LockError::WrongKey) => return Ok(None),
        Err(e) => return Err(damaged_tls(layout, &e.to_string())),
    };
    let sealed: SealedTls = serde_json::from_slice(&unsealed.plaintext)
        .map_err(|e| damaged_tls(layout, &format!("not sealed TLS keys: {e}")))?;
    let der = Zeroizing::new(
        BASE64
            .decode(sealed.key_pkcs8_b64.as_bytes())
            .map_err(|e| damaged_tls(layout, &format!("the TLS key is malformed: {e}")))?,
    );
    let key = PrivateKey::from_pkcs8_der(&der)
        .map_err(|e| damaged_tls(layout, &format!("the TLS key: {e}")))?;
    let chain = chain_from_pem(&sealed.chain_pem)?;
    let roots = TrustRoots::from_pem(sealed.roots_pem.as_bytes())
        .map_err(|e| damaged_tls(layout, &format!("the sealed root bundle: {e}")))?;
    Ok(Some(TlsFiles { chain, key, roots }))
}

/// Damage found in the sealed TLS files: fatal, never retried.
fn damaged_tls(layout: &Layout, problem: &str) -> NodeError {
    NodeError::fatal(
        &layout.sealed_tls_file(),
        format!("this node's sealed TLS keys cannot be read: {problem}"),
    )
    .hint(format!(
        "the state directory is damaged or was tampered with; {START_OVER_HINT}"
    ))
}

/// Parses a PEM certificate chain.
pub(crate) fn chain_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    use moat_pki::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| NodeError::new(ErrorKind::Internal, format!("certificate chain: {e:?}")))?;
    if chain.is_empty() {
        return Err(NodeError::new(
            ErrorKind::Internal,
            "certificate chain is empty",
        ));
    }
    Ok(chain)
}

/// Reads the node's key-encryption key, or creates it on first use.
pub(crate) fn load_or_create_kek(layout: &Layout) -> Result<UnlockKey, NodeError> {
    let path = layout.kek_file();
    if path.exists() {
        return moat_lock::read_unlock_key_file(&path)
            .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()));
    }
    let key =
        UnlockKey::generate().map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
    moat_lock::write_unlock_key_file(&path, &key)
        .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))?;
    Ok(key)
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    moat_lock::write_file_atomic(path, bytes)
        .map_err(|e| NodeError::new(ErrorKind::Internal, e.to_string()))
}

fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(&format!("creating {}", dir.display()), e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error(&format!("restricting {}", dir.display()), e))
}

pub(crate) fn remove_file(path: &Path) -> Result<(), NodeError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&format!("removing {}", path.display()), e)),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&format!("syncing {}", dir.display()), e))
}

pub(crate) fn io_error(what: &str, e: io::Error) -> NodeError {
    NodeError::new(ErrorKind::Internal, format!("{what}: {e}"))
}
