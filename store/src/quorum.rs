//! Quorum arithmetic for membership changes.

use std::collections::BTreeSet;

use moat_pki::NodeId;

/// Why removing a manager was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// The node is not a member.
    #[error("node {0} is not a manager of this cluster")]
    NotAMember(NodeId),
    /// It is the last manager.
    #[error(
        "node {0} is the last manager: demote or remove it and the cluster has no managers left"
    )]
    LastManager(NodeId),
    /// After the removal, the reachable managers would not be a majority.
    #[error(
        "removing node {target} would result in a loss of quorum: {reachable_after} of the remaining {remaining} managers would be reachable, and {needed} are needed"
    )]
    WouldLoseQuorum {
        /// The node to remove.
        target: NodeId,
        /// Managers left after the removal.
        remaining: usize,
        /// Of those, how many are reachable now.
        reachable_after: usize,
        /// The majority of `remaining`.
        needed: usize,
    },
}

/// Whether `target` can leave the voting `members` while the cluster keeps
/// a quorum, given which members are `reachable` now.
///
/// The rule: after the change, the reachable members that remain must be a
/// majority of the members that remain. Removing an unreachable member is
/// therefore always allowed while a majority of the others is up (it can
/// only help), and removing a reachable one is refused when the rest would
/// be one short.
pub fn can_remove(
    members: &BTreeSet<NodeId>,
    reachable: &BTreeSet<NodeId>,
    target: &NodeId,
) -> Result<(), QuorumError> {
    if !members.contains(target) {
        return Err(QuorumError::NotAMember(*target));
    }
    let remaining = members.len() - 1;
    if remaining == 0 {
        return Err(QuorumError::LastManager(*target));
    }
    let reachable_after = members
        .iter()
        .filter(|m| *m != target && reachable.contains(m))
        .count();
    let needed = remaining / 2 + 1;
    if reachable_after < needed {
        return Err(QuorumError::WouldLoseQuorum {
            target: *target,
            remaining,
            reachable_after,
            needed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = (0..n).map(|_| NodeId::generate()).collect();
        v.sort();
        v
    }

    fn set(v: &[NodeId]) -> BTreeSet<NodeId> {
        v.iter().copied().collect()
    }

    /// Every count from the issue, with all members up: removal is allowed
    /// except for the last manager.
    #[test]
    fn all_reachable() {
        for n in [1, 2, 3, 4, 5, 7] {
            let m = ids(n);
            let r = can_remove(&set(&m), &set(&m), &m[0]);
            if n == 1 {
                assert_eq!(r, Err(QuorumError::LastManager(m[0])));
            } else {
                assert_eq!(r, Ok(()), "{n} members");
            }
        }
    }

    /// With k members down, removing an up member is allowed only while the
    /// up members left are a majority of the members left.
    #[test]
    fn some_unreachable() {
        // (members, down, allowed to remove an up member?)
        let cases = [
            (2, 1, false), // 1 left, 0 up
            (3, 1, false), // 2 left, 1 up: not a majority of 2
            (4, 1, true),  // 3 left, 2 up
            (4, 2, false), // 3 left, 1 up
            (5, 1, true),  // 4 left, 3 up
            (5, 2, false), // 4 left, 2 up
            (7, 2, true),  // 6 left, 4 up
            (7, 3, false), // 6 left, 3 up
        ];
        for (n, down, allowed) in cases {
            let m = ids(n);
            let reachable = set(&m[down..]);
            let target = m[n - 1];
            let r = can_remove(&set(&m), &reachable, &target);
            assert_eq!(r.is_ok(), allowed, "{n} members, {down} down: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("loss of quorum"), "{e}");
            }
        }
    }

    /// Removing a member that is already down needs only the others to be a
    /// majority of what remains.
    #[test]
    fn removing_an_unreachable_member() {
        for (n, down, allowed) in [
            (3, 1, true),
            (3, 2, false),
            (5, 2, true),
            (5, 3, false),
            (7, 3, true),
        ] {
            let m = ids(n);
            let reachable = set(&m[down..]);
            let r = can_remove(&set(&m), &reachable, &m[0]);
            assert_eq!(r.is_ok(), allowed, "{n} members, {down} down: {r:?}");
        }
    }

    #[test]
    fn not_a_member() {
        let m = ids(3);
        let stranger = NodeId::generate();
        assert_eq!(
            can_remove(&set(&m), &set(&m), &stranger),
            Err(QuorumError::NotAMember(stranger))
        );
    }
}
