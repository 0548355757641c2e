//! The machine's Docker Engine in tests: a tiny image made from
//! `/bin/busybox` (Debian's busybox-static) with `docker import`, since no
//! registry can be reached, and cleanup of what a test made.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};

/// A test image; removed (`docker rmi -f`) when the last holder drops it.
pub struct TestImage {
    /// Its tag, `moat-test-busybox:<unique>`.
    pub tag: String,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
    }
}

static IMAGE: Mutex<Weak<TestImage>> = Mutex::new(Weak::new());

/// Why the docker tests cannot run here, if they cannot: no engine
/// socket, or no `/bin/busybox` to make the image from.
pub fn unavailable() -> Option<&'static str> {
    if !Path::new("/var/run/docker.sock").exists() {
        return Some("/var/run/docker.sock is absent (no Docker Engine)");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some(
            "/bin/busybox is absent; install the Debian package busybox-static to run the docker tests",
        );
    }
    None
}

/// The test image with `/bin/sh`, `sleep`, `echo` and `env` (made if no
/// running test holds one), or `None` when [`unavailable`] says why.
///
/// # Panics
/// When the image cannot be made although the engine and busybox are
/// there: that is a failure, not a reason to skip.
pub fn test_image() -> Option<Arc<TestImage>> {
    if unavailable().is_some() {
        return None;
    }
    let mut slot = IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = slot.upgrade() {
        return Some(image);
    }
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let bin = root.path().join("bin");
    std::fs::create_dir(&bin).unwrap_or_else(|e| panic!("mkdir: {e}"));
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .unwrap_or_else(|e| panic!("copying busybox: {e}"));
    for tool in ["sh", "sleep", "echo", "env"] {
        std::os::unix::fs::symlink("busybox", bin.join(tool))
            .unwrap_or_else(|e| panic!("symlink: {e}"));
    }
    let tag = format!("moat-test-busybox:{}", crate::unique("t"));
    let image = Arc::new(TestImage { tag: tag.clone() });
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -cf - . | docker import --change 'CMD [\"/bin/sh\"]' - '{tag}'",
            root.path().display()
        ))
        .output()
        .unwrap_or_else(|e| panic!("running docker import: {e}"));
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *slot = Arc::downgrade(&image);
    Some(image)
}

/// Removes every container labelled `moat.node=<node>` when dropped.
pub struct Containers {
    /// The node id the containers are labelled with.
    pub node: String,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in labelled(&self.node) {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

/// The containers labelled `moat.node=<node>` (full ids).
pub fn labelled(node: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label=moat.node={node}"))
        .output()
        .unwrap_or_else(|e| panic!("running docker ps: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every container with a `moat.task.id` label (full ids): what moat
/// daemons started, whatever their node.
pub fn moat_containers() -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", "label=moat.task.id"])
        .output()
        .unwrap_or_else(|e| panic!("running docker ps: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
