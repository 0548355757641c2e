//! The connection pools of a manager's listener, and the rate limit on
//! the log lines that say a connection was refused.
//!
//! Anyone who reaches a manager's cluster port can open TLS connections;
//! joining nodes must be able to, without a certificate. So a connection
//! is counted in one of three pools, each bounded in total and per key:
//!
//! | pool | who | total | per key |
//! |---|---|---|---|
//! | handshake | every connection until its TLS handshake ends (at most [`HANDSHAKE_TIMEOUT`](crate::HANDSHAKE_TIMEOUT)) | [`MAX_HANDSHAKES`] | [`MAX_HANDSHAKES_PER_SOURCE`] per source |
//! | manager handshake | the same, from the address of a current manager (`PeerPolicy::is_manager_source`) | [`MAX_HANDSHAKES`] | [`MAX_HANDSHAKES_PER_SOURCE`] per source |
//! | manager | a client whose certificate verified against the cluster roots, with the manager role | [`MAX_MANAGER_CONNECTIONS`] | [`MAX_CONNECTIONS_PER_NODE`] per node id |
//! | member | a client whose certificate verified against the cluster roots, with the worker role | [`MAX_MEMBER_CONNECTIONS`] | [`MAX_CONNECTIONS_PER_NODE`] per node id |
//! | unauthenticated | a client without a certificate: joins, the CA bundle | [`MAX_UNAUTHENTICATED_CONNECTIONS`] | [`MAX_UNAUTHENTICATED_PER_SOURCE`] per source |
//!
//! A source is an IPv4 address or an IPv6 /64 (one host's usual share).
//! A connection that finds its pool or its key's share full is closed at
//! once. Worst case for members: a flood without certificates holds at most
//! [`MAX_UNAUTHENTICATED_CONNECTIONS`] connections and
//! [`MAX_HANDSHAKES`] handshakes, never a member slot; workers, however
//! many, never take a manager slot; a flood from one
//! source holds [`MAX_UNAUTHENTICATED_PER_SOURCE`] and
//! [`MAX_HANDSHAKES_PER_SOURCE`]. Members sharing a source address with
//! the flood (behind one NAT) share its handshake budget.
//!
//! Refusals are logged at most once per [`REFUSAL_LOG_INTERVAL`] per pool,
//! each line naming the pool, the source and how many refusals it stands
//! for: a flood costs a few lines a minute, not one per connection. The
//! bookkeeping is pure; the caller passes the time in.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use moat_pki::NodeId;

use crate::{
    MAX_CONNECTIONS_PER_NODE, MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, MAX_MANAGER_CONNECTIONS,
    MAX_MEMBER_CONNECTIONS, MAX_UNAUTHENTICATED_CONNECTIONS, MAX_UNAUTHENTICATED_PER_SOURCE,
    REFUSAL_LOG_INTERVAL,
};

/// One of the listener's connection pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pool {
    /// Connections still in their TLS handshake.
    Handshake,
    /// Connections still in their TLS handshake, from a manager's address.
    ManagerHandshake,
    /// Connections whose client certificate verified, from workers.
    Member,
    /// Connections whose client certificate verified, from managers.
    Manager,
    /// Connections without a client certificate.
    Unauthenticated,
}

impl Pool {
    /// The name in log lines.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Pool::Handshake => "handshake",
            Pool::ManagerHandshake => "manager handshake",
            Pool::Member => "member",
            Pool::Manager => "manager",
            Pool::Unauthenticated => "unauthenticated",
        }
    }

    fn index(self) -> usize {
        match self {
            Pool::Handshake => 0,
            Pool::Member => 1,
            Pool::Unauthenticated => 2,
            Pool::Manager => 3,
            Pool::ManagerHandshake => 4,
        }
    }

    pub(crate) fn caps(self) -> (usize, usize) {
        match self {
            Pool::Handshake | Pool::ManagerHandshake => (MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE),
            Pool::Member => (MAX_MEMBER_CONNECTIONS, MAX_CONNECTIONS_PER_NODE),
            Pool::Manager => (MAX_MANAGER_CONNECTIONS, MAX_CONNECTIONS_PER_NODE),
            Pool::Unauthenticated => (
                MAX_UNAUTHENTICATED_CONNECTIONS,
                MAX_UNAUTHENTICATED_PER_SOURCE,
            ),
        }
    }
}

/// Whose share of a pool a connection takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A source network: an IPv4 address, or the /64 of an IPv6 one.
    Source(IpAddr),
    /// A node, by the id in its verified certificate.
    Node(NodeId),
}

impl Key {
    /// The source key of a remote address (an IPv4-mapped IPv6 address
    /// counts as the IPv4 address).
    pub(crate) fn source(remote: SocketAddr) -> Self {
        match remote.ip().to_canonical() {
            IpAddr::V4(v4) => Key::Source(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Key::Source(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Source(IpAddr::V6(net)) => write!(f, "{net}/64"),
            Key::Source(ip) => write!(f, "{ip}"),
            Key::Node(id) => write!(f, "node {id}"),
        }
    }
}

/// Why a connection was refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The whole pool is full.
    PoolFull,
    /// This key holds its whole share of the pool.
    ShareFull,
}

/// The pools of one listener.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pools: [Counts; 5],
    log: RefusalLog,
}

/// A held slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Slot {
    limits: Arc<Limits>,
    pool: Pool,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.lock().pools[self.pool.index()].release(self.key);
    }
}

impl Limits {
    /// Takes a slot of `pool` for `key`, or says why not.
    pub(crate) fn enter(self: &Arc<Self>, pool: Pool, key: Key) -> Result<Slot, Refusal> {
        let (total, share) = pool.caps();
        self.lock().pools[pool.index()].take(key, total, share)?;
        Ok(Slot {
            limits: self.clone(),
            pool,
            key,
        })
    }

    /// Notes a refusal at `now`; `Some(n)` when it is to be logged,
    /// standing for itself and `n` refusals in the same pool not logged
    /// since the pool's last line.
    pub(crate) fn note_refusal(&self, pool: Pool, now: Instant) -> Option<u64> {
        self.lock().log.note(pool, now)
    }

    /// Slots of `pool` held now, in total and by `key`.
    #[cfg(test)]
    fn held(&self, pool: Pool, key: Key) -> (usize, usize) {
        let state = self.lock();
        let counts = &state.pools[pool.index()];
        (counts.total, counts.by_key.get(&key).copied().unwrap_or(0))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The counts stay consistent even if a holder panicked: every
        // change is a single step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slots of one pool: held in total and by key (keys holding none are
/// removed, so the map never outgrows the pool).
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_key: HashMap<Key, usize>,
}

impl Counts {
    fn take(&mut self, key: Key, total: usize, share: usize) -> Result<(), Refusal> {
        if self.total >= total {
            return Err(Refusal::PoolFull);
        }
        let held = self.by_key.entry(key).or_insert(0);
        if *held >= share {
            return Err(Refusal::ShareFull);
        }
        *held += 1;
        self.total += 1;
        Ok(())
    }

    fn release(&mut self, key: Key) {
        if let Some(held) = self.by_key.get_mut(&key) {
            *held -= 1;
            if *held == 0 {
                self.by_key.remove(&key);
            }
            self.total -= 1;
        }
    }
}

/// When each pool last logged a refusal, and how many it has not logged
/// since.
#[derive(Debug, Default)]
struct RefusalLog {
    last: [Option<Instant>; 5],
    unlogged: [u64; 5],
}

impl RefusalLog {
    fn note(&mut self, pool: Pool, now: Instant) -> Option<u64> {
        let i = pool.index();
        let due = self.last[i]
            .is_none_or(|last| now.saturating_duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if due {
            self.last[i] = Some(now);
            Some(std::mem::take(&mut self.unlogged[i]))
        } else {
            self.unlogged[i] += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(text: &str) -> Key {
        Key::source(SocketAddr::new(text.parse().unwrap(), 4377))
    }

    #[test]
    fn a_source_gets_its_share_and_no_more_and_gets_it_back() {
        let limits = Arc::new(Limits::default());
        let a = ip("192.0.2.1");
        let held: Vec<Slot> = (0..MAX_UNAUTHENTICATED_PER_SOURCE)
            .map(|_| limits.enter(Pool::Unauthenticated, a).unwrap())
            .collect();
        assert_eq!(
            limits.enter(Pool::Unauthenticated, a).unwrap_err(),
            Refusal::ShareFull
        );
        // Another source, and members, are not affected.
        let b = limits
            .enter(Pool::Unauthenticated, ip("192.0.2.2"))
            .unwrap();
        let m = limits
            .enter(Pool::Member, Key::Node(NodeId::generate()))
            .unwrap();
        drop(held);
        assert_eq!(limits.held(Pool::Unauthenticated, a), (1, 0));
        let again = limits.enter(Pool::Unauthenticated, a).unwrap();
        drop((b, m, again));
        assert_eq!(limits.held(Pool::Unauthenticated, a), (0, 0));
    }

    #[test]
    fn the_unauthenticated_pool_is_bounded_across_sources() {
        let limits = Arc::new(Limits::default());
        let mut held = Vec::new();
        let mut refused = None;
        for i in 0..=MAX_UNAUTHENTICATED_CONNECTIONS {
            let source = ip(&format!("10.0.{}.{}", i / 200, i % 200 + 1));
            match limits.enter(Pool::Unauthenticated, source) {
                Ok(slot) => held.push(slot),
                Err(e) => refused = Some((i, e)),
            }
        }
        assert_eq!(
            refused,
            Some((MAX_UNAUTHENTICATED_CONNECTIONS, Refusal::PoolFull))
        );
        // Members still get in while it is full.
        limits
            .enter(Pool::Member, Key::Node(NodeId::generate()))
            .unwrap();
    }

    #[test]
    fn handshakes_from_managers_have_their_own_pool() {
        let limits = Arc::new(Limits::default());
        let mut held = Vec::new();
        for i in 0..MAX_HANDSHAKES {
            let source = ip(&format!("10.1.{}.{}", i / 200, i % 200 + 1));
            held.push(limits.enter(Pool::Handshake, source).unwrap());
        }
        assert_eq!(
            limits.enter(Pool::Handshake, ip("10.2.0.1")).unwrap_err(),
            Refusal::PoolFull
        );
        let manager = ip("10.9.0.1");
        let slot = limits.enter(Pool::ManagerHandshake, manager).unwrap();
        assert_eq!(limits.held(Pool::ManagerHandshake, manager), (1, 1));
        drop((held, slot));
    }

    #[test]
    fn workers_filling_their_pool_leave_the_managers_theirs() {
        let limits = Arc::new(Limits::default());
        let held: Vec<Slot> = (0..MAX_MEMBER_CONNECTIONS)
            .map(|_| {
                limits
                    .enter(Pool::Member, Key::Node(NodeId::generate()))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            limits
                .enter(Pool::Member, Key::Node(NodeId::generate()))
                .unwrap_err(),
            Refusal::PoolFull
        );
        let manager = Key::Node(NodeId::generate());
        let m = limits.enter(Pool::Manager, manager).unwrap();
        assert_eq!(limits.held(Pool::Manager, manager), (1, 1));
        drop((held, m));
        assert_eq!(limits.held(Pool::Manager, manager), (0, 0));
    }

    #[test]
    fn one_node_cannot_take_the_member_pool() {
        let limits = Arc::new(Limits::default());
        let node = Key::Node(NodeId::generate());
        let _held: Vec<Slot> = (0..MAX_CONNECTIONS_PER_NODE)
            .map(|_| limits.enter(Pool::Member, node).unwrap())
            .collect();
        assert_eq!(
            limits.enter(Pool::Member, node).unwrap_err(),
            Refusal::ShareFull
        );
        limits
            .enter(Pool::Member, Key::Node(NodeId::generate()))
            .unwrap();
    }

    #[test]
    fn an_ipv6_source_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        assert_eq!(ip("2001:db8:1:2:3:4:5:6"), ip("2001:db8:1:2:ffff::1"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(ip("2001:db8:1:2::9").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn refusals_are_logged_once_per_interval_per_pool_with_a_count() {
        let mut log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note(Pool::Unauthenticated, t0), Some(0));
        for i in 1..=500u64 {
            assert_eq!(
                log.note(Pool::Unauthenticated, t0 + Duration::from_millis(i)),
                None
            );
        }
        // Another pool has its own line.
        assert_eq!(log.note(Pool::Handshake, t0), Some(0));
        assert_eq!(
            log.note(Pool::Unauthenticated, t0 + REFUSAL_LOG_INTERVAL),
            Some(500)
        );
        assert_eq!(
            log.note(Pool::Unauthenticated, t0 + REFUSAL_LOG_INTERVAL * 2),
            Some(0)
        );
    }
}
