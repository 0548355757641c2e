//! Errors of moat-store.

use std::path::PathBuf;

/// Every error moat-store returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the store could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "fsync", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A record or file failed authentication or does not parse: it was
    /// damaged or tampered with. Fatal: the node stops rather than skip it.
    #[error(
        "{} is corrupt at {at}: {reason}; the store refuses to start — restore this manager from a backup or remove it and rejoin",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in it: a byte offset or a log index.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file of the store could not be opened (wrong unlock key,
    /// damaged or tampered file).
    #[error(
        "cannot open {} as the key of node {node} in cluster {cluster} (identity read from store.json): {source}",
        path.display()
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// The node id the key was opened for.
        node: String,
        /// The cluster id the key was opened for.
        cluster: String,
        /// Why.
        #[source]
        source: moat_lock::LockError,
    },
    /// The record count of a DEK (`keys/dek-<v>.uses`) is damaged. Fatal:
    /// starting the count over could seal past the DEK's limit.
    #[error(
        "{} (the record count of data key version {version}) is damaged: {reason}; the store refuses to open, since a restarted count could seal past the key's limit — if only this file is damaged, delete it: the key is then counted as due for rotation and the manager rotates it when it starts",
        path.display()
    )]
    Lease {
        /// The lease file.
        path: PathBuf,
        /// The DEK it counts for.
        version: moat_lock::DekVersion,
        /// What is wrong.
        reason: String,
    },
    /// Sealing or opening with the store keys failed.
    #[error(transparent)]
    Lock(#[from] moat_lock::LockError),
    /// A value could not be encoded or decoded.
    #[error("encoding {what}: {reason}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },
    /// The caller asked for something the store's state does not allow.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        at: impl ToString,
        reason: impl ToString,
    ) -> Self {
        StoreError::Corrupt {
            path: path.into(),
            at: at.to_string(),
            reason: reason.to_string(),
        }
    }
}

impl From<StoreError> for openraft::StorageError<moat_pki::NodeId> {
    fn from(e: StoreError) -> Self {
        openraft::StorageIOError::<moat_pki::NodeId>::new(
            openraft::ErrorSubject::Store,
            openraft::ErrorVerb::Write,
            openraft::AnyError::new(&e),
        )
        .into()
    }
}
