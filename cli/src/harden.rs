//! Process hardening for `moat daemon`, before any key is read: no core
//! file and no ptrace by other processes of the same user (the process is
//! not dumpable), and, where allowed, every page locked in memory so keys
//! never reach swap. An unlocked manager holds the CA key, the unlock key
//! and the store's data keys in memory; a core file would undo autolock.

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::prctl;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// The bit of `CAP_IPC_LOCK` in a capability set (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// Makes the process non-dumpable, sets the core-file limit to zero and
/// locks memory where the limit (or `CAP_IPC_LOCK`) allows it, and says
/// in the log what it could not do. Never fails the start: each step is
/// best effort, and what was not done is logged as a warning.
pub(crate) fn harden() {
    forbid_core_dumps();
    match lock_memory() {
        Ok(()) => tracing::info!("process memory locked: keys are never swapped out"),
        Err(why) => tracing::warn!(
            "process memory not locked ({why}): keys may reach swap; give the daemon CAP_IPC_LOCK or an unlimited memlock limit (systemd: LimitMEMLOCK=infinity), or use encrypted swap"
        ),
    }
}

/// Makes the process non-dumpable and sets the core-file limit to zero;
/// says which worked.
fn forbid_core_dumps() -> (bool, bool) {
    let not_dumpable = prctl::set_dumpable(false).is_ok();
    if !not_dumpable {
        tracing::warn!(
            "could not make the process non-dumpable: a crash may write keys into a core file"
        );
    }
    let no_core = setrlimit(Resource::RLIMIT_CORE, 0, 0).is_ok();
    if !no_core {
        tracing::warn!(
            "could not set the core-file limit to zero: a crash may write keys into a core file"
        );
    }
    (not_dumpable, no_core)
}

/// Locks every page, present and future, if nothing stops later
/// allocations: with a finite `RLIMIT_MEMLOCK` and no `CAP_IPC_LOCK`, a
/// future allocation past the limit would fail and abort the daemon, so
/// it is not tried.
fn lock_memory() -> Result<(), String> {
    let (soft, _) = getrlimit(Resource::RLIMIT_MEMLOCK)
        .map_err(|e| format!("reading the memlock limit: {e}"))?;
    if soft != RLIM_INFINITY && !has_ipc_lock() {
        return Err(format!(
            "the memlock limit is {soft} bytes and the daemon lacks CAP_IPC_LOCK"
        ));
    }
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE)
        .map_err(|e| format!("mlockall: {e}"))
}

/// Whether the effective capability set holds `CAP_IPC_LOCK`.
fn has_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| cap_eff(&status))
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_masks_parse() {
        let status = "Name:\tmoat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn hardening_leaves_no_core_and_no_dump() {
        // This only tightens the test process (memory is not locked here).
        assert_eq!(forbid_core_dumps(), (true, true));
        assert_eq!(prctl::get_dumpable().ok(), Some(false));
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).ok(), Some((0, 0)));
    }
}
