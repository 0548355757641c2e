//! The key a member's key files are sealed under (its KEK), and the lock
//! held while they are written.
//!
//! A member keeps its KEK for as long as it runs, because it must seal
//! what it writes later: a renewed TLS key, a new store data key, a
//! re-sealed file when the cluster's autolock setting changes. The KEK
//! lives here and nowhere else in the daemon; every sealed write goes
//! through [`Keyring`] under its lock, so a re-key never races a renewal
//! or a data-key rotation. The key is wiped when it is replaced or
//! dropped (`UnlockKey` zeroizes itself).

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use moat_lock::{KeySource, UnlockKey};
use moat_pki::{ClusterId, NodeId, PrivateKey, TrustRoots};

use crate::error::NodeError;
use crate::files::{self, Layout};

/// A member's KEK and the lock over its sealed files.
pub(crate) struct Keyring {
    layout: Layout,
    cluster: ClusterId,
    node: NodeId,
    kek: ArcSwap<UnlockKey>,
    writing: Mutex<()>,
}

/// Held while sealed files are written (see [`Keyring::hold`]).
pub(crate) struct Held<'a> {
    ring: &'a Keyring,
    _guard: MutexGuard<'a, ()>,
}

impl Keyring {
    pub(crate) fn new(layout: Layout, cluster: ClusterId, node: NodeId, kek: UnlockKey) -> Self {
        Self {
            layout,
            cluster,
            node,
            kek: ArcSwap::from_pointee(kek),
            writing: Mutex::new(()),
        }
    }

    /// Takes the lock over the key files; the KEK is read through the
    /// guard, so it cannot change while files are sealed under it.
    pub(crate) fn hold(&self) -> Held<'_> {
        Held {
            ring: self,
            _guard: self.writing.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Seals the node's chain, key and trusted roots (`certs/node.sealed`).
    pub(crate) fn save_tls(
        &self,
        chain_pem: &str,
        key: &PrivateKey,
        roots: &TrustRoots,
    ) -> Result<(), NodeError> {
        let held = self.hold();
        files::save_tls(
            &self.layout,
            &held.kek(),
            &self.cluster,
            &self.node,
            chain_pem,
            key,
            roots,
        )
    }

    /// Opens the sealed TLS files with the current KEK.
    pub(crate) fn load_tls(&self) -> Result<files::TlsFiles, NodeError> {
        let held = self.hold();
        files::load_tls(&self.layout, &held.kek(), &self.cluster, &self.node)
    }

    /// A copy of the KEK, for a caller that must own one (a node rejoining
    /// keeps its key).
    pub(crate) fn copy_kek(&self) -> Result<UnlockKey, NodeError> {
        crate::keys::clone_key(&self.kek.load())
    }

    /// Runs `f` with the KEK as a moat-lock key source (opening the store).
    pub(crate) fn with_source<T>(&self, f: impl FnOnce(KeySource<'_>) -> T) -> T {
        let kek = self.kek.load_full();
        f(KeySource::Key(&kek))
    }
}

impl Held<'_> {
    /// The KEK, while the lock is held.
    pub(crate) fn kek(&self) -> Arc<UnlockKey> {
        self.ring.kek.load_full()
    }

    /// Makes `new` the KEK (after the files were re-sealed under it).
    pub(crate) fn replace(&self, new: UnlockKey) {
        self.ring.kek.store(Arc::new(new));
    }
}
