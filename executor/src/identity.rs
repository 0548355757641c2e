//! A task's workload identity on its node: the X.509-SVID files in the
//! task's secrets directory, and its Workload API socket.
//!
//! ```text
//! <task_dir>/secrets/identity -> .identity-<serial>   a symlink, swapped atomically
//! <task_dir>/secrets/.identity-<serial>/              0755
//!     cert.pem    0444  the certificate (then the cross-signed new root during a CA rotation)
//!     key.pem     0400  its private key (PKCS#8), made on this node
//!     bundle.pem  0444  the roots a peer should trust
//! <task_dir>/spiffe/                                  0755  /run/spiffe in a container
//! <task_dir>/spiffe/agent.sock                        the SPIFFE Workload API
//! ```
//!
//! A renewal writes a new `.identity-<serial>` directory and then replaces
//! the `identity` symlink with `rename(2)`: each file read through the
//! link is whole, old or new. A reader that opens `cert.pem` and `key.pem`
//! one after the other can still straddle a swap; resolving the link once
//! (`readlink identity`, then both files in that directory) gives a pair
//! that matches, and the Workload API sends both in one message. The old
//! directory is removed after the swap.

use std::fmt;

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::files::{mkdir, task_dir, write_new};

/// Where the identity is, in the task's secrets directory.
pub const IDENTITY_DIR: &str = "identity";
/// The Workload API socket's directory in a task's directory, and where
/// it is mounted in a container.
const SPIFFE_DIR: &str = "spiffe";
/// The socket's file name.
const SOCKET: &str = "agent.sock";
/// Where a container finds the socket's directory.
pub(crate) const CONTAINER_SPIFFE_DIR: &str = "/run/spiffe";
/// Longest path a unix socket may have (`sun_path` is 108 bytes with its
/// NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// A task's workload certificate as its node received it, with the key
/// the node made for it.
#[derive(Clone)]
pub struct WorkloadIdentity {
    /// Its serial (hex): names its directory.
    pub serial: String,
    /// `NotAfter`, Unix seconds.
    pub not_after: i64,
    /// When the node renews it (Unix seconds).
    pub renew_at: i64,
    /// The certificate and its chain, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM (zeroized on drop, never printed).
    pub key_pem: Zeroizing<String>,
    /// The roots a peer should trust, PEM.
    pub bundle_pem: String,
    /// The same, as the Workload API serves it.
    pub svid: moat_workload::Svid,
    /// The roots the node trusted when it asked for it (PEM): when they
    /// change (a CA rotation), the node asks again.
    pub node_roots_pem: String,
}

impl fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("renew_at", &self.renew_at)
            .field("svid", &self.svid)
            .finish_non_exhaustive()
    }
}

/// The Workload API socket of `task_id`.
pub(crate) fn socket_path(root: &Path, task_id: &str) -> PathBuf {
    spiffe_dir(root, task_id).join(SOCKET)
}

/// The directory of `task_id`'s socket.
pub(crate) fn spiffe_dir(root: &Path, task_id: &str) -> PathBuf {
    task_dir(root, task_id).join(SPIFFE_DIR)
}

/// The socket's address inside a container.
pub(crate) fn container_address() -> String {
    format!("unix://{CONTAINER_SPIFFE_DIR}/{SOCKET}")
}

/// Writes `identity` into `secrets_dir` (the task's secrets directory,
/// which exists) and points `identity` at it; removes the identities it
/// replaces. Makes the socket's directory too.
pub(crate) fn write(
    secrets_dir: &Path,
    spiffe_dir: &Path,
    identity: &WorkloadIdentity,
) -> Result<(), String> {
    if identity.serial.is_empty()
        || identity.serial.len() > 64
        || !identity.serial.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(format!(
            "the certificate serial {:?} is not hex",
            identity.serial
        ));
    }
    let generation = format!(".{IDENTITY_DIR}-{}", identity.serial);
    let dir = secrets_dir.join(&generation);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot replace {}: {e}", dir.display())),
    }
    mkdir(&dir, 0o755)?;
    for (name, data, mode) in [
        ("key.pem", identity.key_pem.as_bytes(), 0o400),
        ("cert.pem", identity.cert_pem.as_bytes(), 0o444),
        ("bundle.pem", identity.bundle_pem.as_bytes(), 0o444),
    ] {
        write_new(&dir.join(name), data, mode)?;
    }
    let link = secrets_dir.join(IDENTITY_DIR);
    let next = secrets_dir.join(format!(".{IDENTITY_DIR}.next"));
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(&generation, &next)
        .map_err(|e| format!("cannot link {}: {e}", next.display()))?;
    std::fs::rename(&next, &link).map_err(|e| format!("cannot replace {}: {e}", link.display()))?;
    // The identities it replaced.
    if let Ok(entries) = std::fs::read_dir(secrets_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!(".{IDENTITY_DIR}-")) && name != generation {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    if !spiffe_dir.exists() {
        mkdir(spiffe_dir, 0o755)?;
    }
    Ok(())
}

/// Serves `identity` on the task's socket: binds it if `endpoint` is
/// `None` (a new task, or one adopted after a restart), then publishes.
pub(crate) fn serve(
    endpoint: Option<moat_workload::Endpoint>,
    socket: &Path,
    identity: &WorkloadIdentity,
) -> Result<moat_workload::Endpoint, String> {
    let endpoint = match endpoint {
        Some(e) => e,
        None => {
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(format!(
                    "the Workload API socket {} is {len} bytes long, more than a unix socket \
                     may have ({MAX_SOCKET_PATH}): start the daemon with a shorter --secrets-dir",
                    socket.display()
                ));
            }
            moat_workload::Endpoint::bind(socket).map_err(|e| {
                format!("cannot serve the Workload API at {}: {e}", socket.display())
            })?
        }
    };
    endpoint.publish(identity.svid.clone());
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn identity(serial: &str, cert: &str) -> WorkloadIdentity {
        WorkloadIdentity {
            serial: serial.into(),
            not_after: 0,
            renew_at: 0,
            cert_pem: cert.into(),
            key_pem: Zeroizing::new(format!("key of {cert}")),
            bundle_pem: "roots".into(),
            svid: moat_workload::Svid::new(
                "spiffe://c/service/s".into(),
                vec![vec![1]],
                Zeroizing::new(vec![2]),
                vec![vec![3]],
            )
            .unwrap(),
            node_roots_pem: String::new(),
        }
    }

    #[test]
    fn a_renewal_swaps_the_pair_and_leaves_no_old_key() {
        let root = tempfile::tempdir().unwrap();
        let secrets = root.path().join("secrets");
        let spiffe = root.path().join("spiffe");
        std::fs::create_dir(&secrets).unwrap();
        write(&secrets, &spiffe, &identity("0a", "first")).unwrap();
        let cert = secrets.join("identity").join("cert.pem");
        let key = secrets.join("identity").join("key.pem");
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "first");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o400
        );
        assert!(spiffe.is_dir());
        write(&secrets, &spiffe, &identity("0b", "second")).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), "second");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "key of second");
        let left: Vec<String> = std::fs::read_dir(&secrets)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !left.iter().any(|n| n == ".identity-0a"),
            "the old key is gone: {left:?}"
        );
        assert!(format!("{:?}", identity("0c", "x")).contains("0c"));
        assert!(!format!("{:?}", identity("0c", "x")).contains("key of"));
        // A serial that is not hex never names a path.
        let err = write(&secrets, &spiffe, &identity("../x", "bad")).unwrap_err();
        assert!(err.contains("not hex"), "{err}");
    }
}
