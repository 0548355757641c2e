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

/// Every test that starts a Docker swarm on the machine's engine holds an
/// exclusive lock on this file for as long as the swarm lives: one swarm
/// at a time.
pub const SWARM_LOCK: &str = "/tmp/moat-docker-swarm.lock";

/// A Docker swarm a test started on the machine's engine (a one-manager
/// swarm on 127.0.0.1:2377). Dropping it leaves the swarm and removes
/// `docker_gwbridge` if the swarm made it, so the engine is left as it was
/// found; the lock goes last.
pub struct DockerSwarm {
    had_gwbridge: bool,
    _lock: std::fs::File,
}

impl DockerSwarm {
    /// Takes [`SWARM_LOCK`] and runs `docker swarm init --advertise-addr
    /// 127.0.0.1 --listen-addr 127.0.0.1:2377` with `extra` arguments;
    /// returns the guard and what `init` printed.
    ///
    /// # Panics
    /// If the engine is already in a swarm (it is not touched: that one is
    /// somebody's), or a docker command fails.
    pub fn init(extra: &[&str]) -> (DockerSwarm, String) {
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SWARM_LOCK)
            .unwrap_or_else(|e| panic!("opening {SWARM_LOCK}: {e}"));
        lock.lock()
            .unwrap_or_else(|e| panic!("locking {SWARM_LOCK}: {e}"));
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        assert_eq!(
            state.trim(),
            "inactive",
            "this machine's Docker engine is already in a swarm: not touching it; leave it \
             (`docker swarm leave --force`) or run this test elsewhere"
        );
        let guard = DockerSwarm {
            had_gwbridge: has_gwbridge(),
            _lock: lock,
        };
        let mut args = vec![
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            "127.0.0.1:2377",
        ];
        args.extend_from_slice(extra);
        let out = docker_ok(&args);
        (guard, out)
    }
}

impl Drop for DockerSwarm {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["swarm", "leave", "--force"])
            .output();
        if !self.had_gwbridge && has_gwbridge() {
            let _ = Command::new("docker")
                .args(["network", "rm", "docker_gwbridge"])
                .output();
        }
    }
}

/// Runs `docker ARGS` and returns its standard output.
///
/// # Panics
/// If it cannot run or fails (the message has its standard error).
pub fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn has_gwbridge() -> bool {
    docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .any(|n| n == "docker_gwbridge")
}
