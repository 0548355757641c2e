//! Limits on how fast callers can make a manager write audit records:
//! refused joins (anyone), certificate renewals and forwarded journal
//! events (any node).
//!
//! Anyone who reaches a manager's cluster port can send a join request; a
//! refused one is a security event, and every audit record is committed
//! through raft and kept for good. Recording each refusal would let an
//! unauthenticated sender grow every manager's store without bound (the
//! whole log must fit in a raft snapshot). So each manager records refused
//! joins one by one only within two token buckets, one per source network
//! (an IPv4 address, an IPv6 /64) and one for all sources, and counts the
//! rest. The count goes into the log as one summary record at most once a
//! minute (`node.join`, denied, `suppressed` = how many, `sources` = the
//! busiest sources), and into the next individual record from the same
//! source (`suppressed_before`). Nothing is dropped unseen: every refusal
//! is also in the daemon log and in `moat_join_refusals_total`.
//!
//! Worst case per manager under a sustained flood from many addresses: the
//! global bucket's rate (6 a minute) plus one summary a minute, about
//! 10,000 records a day.
//!
//! Certificate renewals are audited too (`cert.renew`, with the change to
//! the node's recorded certificate), and a node, a compromised worker say,
//! may ask for as many as it likes. [`Renewals`] lets each node renew in a
//! small burst and then once per tenth of the certificate lifetime (10 s
//! to 1 h), with a fresh burst whenever its situation changes (its role,
//! a CA rotation starting, finishing or rolled back), so that the renewals
//! those require are never held back.
//!
//! A node's refused requests for a task's secrets ([`Denials`]) are
//! recorded in a burst of 10 and then one a minute; each record carries
//! the count suppressed before it, and every refusal is in the daemon log.
//!
//! A node's forwarded journal events ([`Forwards`]) get a burst of 256 and
//! then one every 10 s; what is over stays in the node's journal, which
//! forwards it later from where the cluster log stopped: nothing is lost,
//! an honest node's rare backlog only takes longer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Refusals from one source recorded in a burst, and then one per period.
const SOURCE_BURST: u32 = 5;
const SOURCE_REFILL: Duration = Duration::from_secs(60);
/// Refusals from all sources recorded in a burst, then one per period.
const GLOBAL_BURST: u32 = 30;
const GLOBAL_REFILL: Duration = Duration::from_secs(10);
/// How long suppressed refusals are counted before their summary.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Sources tracked at once; beyond this, new sources share one bucket.
const MAX_SOURCES: usize = 4096;
/// Sources named in a summary (the busiest first).
const SUMMARY_SOURCES: usize = 16;
/// The key of sources past [`MAX_SOURCES`], and of unknown ones.
const OTHER: &str = "other";

/// A token bucket: `burst` tokens, one more every `refill`.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, burst: u32, refill: Duration, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let earned = elapsed.as_nanos() / refill.as_nanos().max(1);
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(earned).min(burst);
            // Keep the remainder: a token every `refill`, not every call.
            self.at = if self.tokens == burst {
                now
            } else {
                self.at + refill * earned
            };
        }
    }

    fn is_full(&self, burst: u32, refill: Duration, now: Instant) -> bool {
        let mut b = self.clone();
        b.refill(burst, refill, now);
        b.tokens == burst
    }
}

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Record it; `suppressed_before` refusals from its source were
    /// counted, not recorded, since the last record from it.
    Record { suppressed_before: u64 },
    /// Count it in the next summary.
    Suppress,
}

/// Suppressed refusals to record as one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Summary {
    pub(crate) total: u64,
    /// The busiest sources and their counts, most first.
    pub(crate) sources: Vec<(String, u64)>,
    /// Sources not named in `sources`.
    pub(crate) other_sources: usize,
}

impl Summary {
    /// `10.0.0.7 ×40, 2001:db8::/64 ×3, and 2 more`.
    pub(crate) fn sources_text(&self) -> String {
        let mut text = self
            .sources
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.other_sources > 0 {
            text.push_str(&format!(", and {} more", self.other_sources));
        }
        text
    }
}

#[derive(Debug)]
struct Source {
    bucket: Bucket,
    /// Suppressed since its last record (for `suppressed_before`).
    unrecorded: u64,
}

/// Per-manager state; see the module docs.
#[derive(Debug)]
pub(crate) struct Refusals {
    global: Bucket,
    sources: HashMap<String, Source>,
    /// Suppressed since the last summary, per source.
    pending: HashMap<String, u64>,
    pending_since: Option<Instant>,
    /// Every refusal seen, recorded or not (for metrics).
    pub(crate) seen: u64,
    /// Every refusal not recorded one by one.
    pub(crate) suppressed: u64,
}

impl Refusals {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            global: Bucket::full(GLOBAL_BURST, now),
            sources: HashMap::new(),
            pending: HashMap::new(),
            pending_since: None,
            seen: 0,
            suppressed: 0,
        }
    }

    /// Decides about a refusal from `source` (None when the transport did
    /// not say).
    pub(crate) fn check(&mut self, source: Option<IpAddr>, now: Instant) -> Verdict {
        self.seen = self.seen.saturating_add(1);
        let key = self.key_for(source, now);
        let src = self.sources.entry(key.clone()).or_insert_with(|| Source {
            bucket: Bucket::full(SOURCE_BURST, now),
            unrecorded: 0,
        });
        src.bucket.refill(SOURCE_BURST, SOURCE_REFILL, now);
        self.global.refill(GLOBAL_BURST, GLOBAL_REFILL, now);
        if src.bucket.tokens > 0 && self.global.tokens > 0 {
            src.bucket.tokens -= 1;
            self.global.tokens -= 1;
            return Verdict::Record {
                suppressed_before: std::mem::take(&mut src.unrecorded),
            };
        }
        src.unrecorded = src.unrecorded.saturating_add(1);
        self.suppressed = self.suppressed.saturating_add(1);
        let n = self.pending.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        self.pending_since.get_or_insert(now);
        Verdict::Suppress
    }

    /// The summary of what was suppressed, once [`SUMMARY_EVERY`] has
    /// passed since the first of it.
    pub(crate) fn take_summary(&mut self, now: Instant) -> Option<Summary> {
        let since = self.pending_since?;
        if now.saturating_duration_since(since) < SUMMARY_EVERY {
            return None;
        }
        self.pending_since = None;
        let mut counts: Vec<(String, u64)> = self.pending.drain().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let total = counts
            .iter()
            .map(|(_, n)| *n)
            .fold(0u64, u64::saturating_add);
        let other_sources = counts.len().saturating_sub(SUMMARY_SOURCES);
        counts.truncate(SUMMARY_SOURCES);
        Some(Summary {
            total,
            sources: counts,
            other_sources,
        })
    }

    /// The bucket key of `source`: its address, an IPv6 address's /64, or
    /// [`OTHER`] once [`MAX_SOURCES`] are tracked and none is idle.
    fn key_for(&mut self, source: Option<IpAddr>, now: Instant) -> String {
        let Some(ip) = source else {
            return OTHER.to_string();
        };
        let key = match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{prefix}/64")
            }
        };
        if self.sources.contains_key(&key) || self.sources.len() < MAX_SOURCES {
            return key;
        }
        // Forget sources whose bucket has refilled and that owe no count.
        self.sources
            .retain(|_, s| s.unrecorded > 0 || !s.bucket.is_full(SOURCE_BURST, SOURCE_REFILL, now));
        if self.sources.len() < MAX_SOURCES {
            key
        } else {
            OTHER.to_string()
        }
    }
}

/// Renewals a node gets at once in the same situation.
const RENEW_BURST: u32 = 3;
/// Bounds of the time between renewals past the burst.
const RENEW_REFILL_MIN: Duration = Duration::from_secs(10);
const RENEW_REFILL_MAX: Duration = Duration::from_secs(3600);

/// What a renewal depends on: a change gives the node a fresh burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Situation {
    pub(crate) role: moat_pki::Role,
    pub(crate) ca_generation: u64,
    pub(crate) rotation: Option<u64>,
}

/// Per-manager renewal limits; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Renewals {
    nodes: HashMap<moat_pki::NodeId, (Situation, Bucket)>,
    /// Renewals refused here since the manager started (for metrics).
    pub(crate) refused: u64,
}

impl Renewals {
    /// Whether node `id` may renew now; if not, how long until it may.
    /// `lifetime` is the cluster's certificate lifetime.
    pub(crate) fn check(
        &mut self,
        id: moat_pki::NodeId,
        situation: Situation,
        lifetime: Duration,
        now: Instant,
    ) -> Result<(), Duration> {
        let refill = (lifetime / 10).clamp(RENEW_REFILL_MIN, RENEW_REFILL_MAX);
        if self.nodes.len() >= MAX_SOURCES && !self.nodes.contains_key(&id) {
            self.nodes
                .retain(|_, (_, b)| !b.is_full(RENEW_BURST, refill, now));
        }
        let entry = self
            .nodes
            .entry(id)
            .or_insert_with(|| (situation.clone(), Bucket::full(RENEW_BURST, now)));
        if entry.0 != situation {
            *entry = (situation, Bucket::full(RENEW_BURST, now));
        }
        let bucket = &mut entry.1;
        bucket.refill(RENEW_BURST, refill, now);
        if bucket.tokens > 0 {
            bucket.tokens -= 1;
            return Ok(());
        }
        self.refused = self.refused.saturating_add(1);
        Err((bucket.at + refill).saturating_duration_since(now))
    }

    /// Gives back the renewal [`Renewals::check`] allowed node `id`: it
    /// failed before anything was recorded (no quorum, say), and a node
    /// that retries through an outage must not run out of renewals by
    /// the time the cluster is back.
    pub(crate) fn refund(&mut self, id: moat_pki::NodeId) {
        if let Some((_, bucket)) = self.nodes.get_mut(&id) {
            bucket.tokens = (bucket.tokens + 1).min(RENEW_BURST);
        }
    }
}

/// Journal events a node forwards at once, and then one per period.
const FORWARD_BURST: u32 = 256;
const FORWARD_REFILL: Duration = Duration::from_secs(10);

/// Per-manager limits on forwarded journal events; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Forwards {
    nodes: HashMap<moat_pki::NodeId, Bucket>,
    /// Events turned away here since the manager started (for metrics).
    pub(crate) deferred: u64,
}

impl Forwards {
    /// How many of `n` events node `id` may forward now (the first ones).
    pub(crate) fn allow(&mut self, id: moat_pki::NodeId, n: usize, now: Instant) -> usize {
        if self.nodes.len() >= MAX_SOURCES && !self.nodes.contains_key(&id) {
            self.nodes
                .retain(|_, b| !b.is_full(FORWARD_BURST, FORWARD_REFILL, now));
        }
        let bucket = self
            .nodes
            .entry(id)
            .or_insert_with(|| Bucket::full(FORWARD_BURST, now));
        bucket.refill(FORWARD_BURST, FORWARD_REFILL, now);
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        let granted = want.min(bucket.tokens);
        bucket.tokens -= granted;
        self.deferred = self.deferred.saturating_add(u64::from(want - granted));
        granted as usize
    }
}

/// Refused secret requests recorded per node in a burst, then one per
/// period.
const DENY_BURST: u32 = 10;
const DENY_REFILL: Duration = Duration::from_secs(60);

/// Per-manager limits on audit records of refused secret requests.
#[derive(Debug, Default)]
pub(crate) struct Denials {
    nodes: HashMap<moat_pki::NodeId, (Bucket, u64)>,
}

impl Denials {
    /// Whether node `id`'s refusal is recorded now: `Some(n)`, with the
    /// refusals of that node suppressed since its last record.
    pub(crate) fn check(&mut self, id: moat_pki::NodeId, now: Instant) -> Option<u64> {
        if self.nodes.len() >= MAX_SOURCES && !self.nodes.contains_key(&id) {
            self.nodes
                .retain(|_, (b, n)| *n > 0 || !b.is_full(DENY_BURST, DENY_REFILL, now));
        }
        let (bucket, suppressed) = self
            .nodes
            .entry(id)
            .or_insert_with(|| (Bucket::full(DENY_BURST, now), 0));
        bucket.refill(DENY_BURST, DENY_REFILL, now);
        if bucket.tokens > 0 {
            bucket.tokens -= 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed = suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_denials_are_recorded_in_a_burst_then_counted() {
        let t = Instant::now();
        let node = moat_pki::NodeId::generate();
        let mut d = Denials::default();
        let recorded = (0..25).filter(|_| d.check(node, t).is_some()).count();
        assert_eq!(recorded, DENY_BURST as usize);
        // A period later: one more, carrying the 15 suppressed before it.
        assert_eq!(d.check(node, t + DENY_REFILL), Some(15));
        assert_eq!(d.check(node, t + DENY_REFILL), None);
        // Another node has its own burst.
        assert_eq!(d.check(moat_pki::NodeId::generate(), t), Some(0));
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn recorded(r: &mut Refusals, source: Option<IpAddr>, now: Instant, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(r.check(source, now), Verdict::Record { .. }))
            .count()
    }

    #[test]
    fn one_source_gets_its_burst_then_one_a_minute() {
        let t = Instant::now();
        let mut r = Refusals::new(t);
        assert_eq!(
            recorded(&mut r, ip("10.0.0.7"), t, 100),
            SOURCE_BURST as usize
        );
        assert_eq!(r.seen, 100);
        assert_eq!(r.suppressed, 100 - u64::from(SOURCE_BURST));
        // Half a period later: nothing more.
        assert_eq!(
            recorded(&mut r, ip("10.0.0.7"), t + SOURCE_REFILL / 2, 10),
            0
        );
        // One period later: one, and it carries the count before it.
        let later = t + SOURCE_REFILL;
        assert_eq!(
            r.check(ip("10.0.0.7"), later),
            Verdict::Record {
                suppressed_before: 105
            }
        );
        assert_eq!(r.check(ip("10.0.0.7"), later), Verdict::Suppress);
        // Another source is not held back by the first.
        assert_eq!(
            r.check(ip("10.0.0.8"), later),
            Verdict::Record {
                suppressed_before: 0
            }
        );
    }

    #[test]
    fn many_sources_share_the_global_bucket() {
        let t = Instant::now();
        let mut r = Refusals::new(t);
        let n: usize = (0..1000u32)
            .map(|i| {
                let a = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
                recorded(&mut r, Some(a), t, 1)
            })
            .sum();
        assert_eq!(n, GLOBAL_BURST as usize);
        // An hour of one new source per second records at the global rate.
        let mut n = 0;
        for s in 1..=3600u32 {
            let a = IpAddr::from((0x0b00_0000u32 + s).to_be_bytes());
            n += recorded(&mut r, Some(a), t + Duration::from_secs(u64::from(s)), 1);
        }
        let rate = 3600 / GLOBAL_REFILL.as_secs() as usize;
        assert!((rate - 1..=rate + 1).contains(&n), "{n} records in an hour");
        assert!(
            r.sources.len() <= MAX_SOURCES,
            "{} sources",
            r.sources.len()
        );
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_ipv4_mapped_is_ipv4() {
        let t = Instant::now();
        let mut r = Refusals::new(t);
        let burst = SOURCE_BURST as usize;
        for i in 0..burst {
            let a = ip(&format!("2001:db8:1:2::{:x}", i + 1));
            assert!(matches!(r.check(a, t), Verdict::Record { .. }));
        }
        assert_eq!(r.check(ip("2001:db8:1:2:ffff::9"), t), Verdict::Suppress);
        assert!(matches!(
            r.check(ip("2001:db8:1:3::1"), t),
            Verdict::Record { .. }
        ));
        assert_eq!(recorded(&mut r, ip("192.0.2.1"), t, burst), burst);
        assert_eq!(r.check(ip("::ffff:192.0.2.1"), t), Verdict::Suppress);
    }

    #[test]
    fn the_summary_waits_a_minute_and_names_the_busiest() {
        let t = Instant::now();
        let mut r = Refusals::new(t);
        assert_eq!(r.take_summary(t + SUMMARY_EVERY * 2), None);
        recorded(&mut r, ip("10.0.0.1"), t, 5 + 40);
        recorded(&mut r, ip("10.0.0.2"), t, 5 + 3);
        // Four more sources use up the global bucket (30 = 6 × 5) ...
        for i in 0..4u8 {
            assert_eq!(recorded(&mut r, ip(&format!("10.0.2.{i}")), t, 5), 5);
        }
        // ... so twenty new ones are counted from their first refusal.
        for i in 0..20u8 {
            assert_eq!(recorded(&mut r, ip(&format!("10.0.1.{i}")), t, 1), 0);
        }
        assert_eq!(r.take_summary(t + SUMMARY_EVERY / 2), None);
        let s = r
            .take_summary(t + SUMMARY_EVERY)
            .expect("a summary after a minute");
        assert_eq!(s.total, 40 + 3 + 20);
        assert_eq!(s.sources.len(), SUMMARY_SOURCES);
        assert_eq!(s.sources[0], ("10.0.0.1".to_string(), 40));
        assert_eq!(s.sources[1], ("10.0.0.2".to_string(), 3));
        assert_eq!(s.other_sources, 22 - SUMMARY_SOURCES);
        assert!(s.sources_text().starts_with("10.0.0.1 ×40, 10.0.0.2 ×3, "));
        assert!(s.sources_text().ends_with(", and 6 more"));
        // Taken: the next one needs new refusals.
        assert_eq!(r.take_summary(t + SUMMARY_EVERY * 3), None);
    }

    #[test]
    fn past_the_source_limit_idle_sources_are_forgotten_first() {
        let t = Instant::now();
        let mut r = Refusals::new(t);
        for i in 0..MAX_SOURCES as u32 {
            r.sources.insert(
                IpAddr::from(i.to_be_bytes()).to_string(),
                Source {
                    bucket: Bucket::full(SOURCE_BURST, t),
                    unrecorded: 0,
                },
            );
        }
        // All full (idle): a new source makes room.
        let fresh = Some(IpAddr::from(u32::MAX.to_be_bytes()));
        assert_eq!(r.key_for(fresh, t), "255.255.255.255");
        // All busy: a new source shares `other`.
        for s in r.sources.values_mut() {
            s.unrecorded = 1;
        }
        for i in 0..MAX_SOURCES as u32 {
            r.sources.entry(format!("x{i}")).or_insert(Source {
                bucket: Bucket::full(SOURCE_BURST, t),
                unrecorded: 1,
            });
        }
        assert_eq!(r.key_for(ip("203.0.113.5"), t), OTHER);
        assert_eq!(r.key_for(None, t), OTHER);
    }

    fn situation(generation: u64, rotation: Option<u64>) -> Situation {
        Situation {
            role: moat_pki::Role::Worker,
            ca_generation: generation,
            rotation,
        }
    }

    #[test]
    fn renewals_come_in_a_burst_then_one_per_tenth_of_the_lifetime() {
        let t = Instant::now();
        let mut r = Renewals::default();
        let id = moat_pki::NodeId::generate();
        let day = Duration::from_secs(5 * 3600);
        for _ in 0..RENEW_BURST {
            assert_eq!(r.check(id, situation(0, None), day, t), Ok(()));
        }
        // Five-hour certificates: one more after 30 min, not before.
        let wait = r.check(id, situation(0, None), day, t).unwrap_err();
        assert_eq!(wait, day / 10);
        let soon = t + Duration::from_secs(1000);
        assert!(r.check(id, situation(0, None), day, soon).is_err());
        assert_eq!(r.check(id, situation(0, None), day, t + day / 10), Ok(()));
        assert_eq!(r.refused, 2);
        // Another node is not held back.
        let other = moat_pki::NodeId::generate();
        assert_eq!(r.check(other, situation(0, None), day, t), Ok(()));
        // One-minute certificates: the floor is 10 s.
        let n = moat_pki::NodeId::generate();
        let minute = Duration::from_secs(60);
        for _ in 0..RENEW_BURST {
            r.check(n, situation(0, None), minute, t).unwrap();
        }
        assert_eq!(
            r.check(n, situation(0, None), minute, t),
            Err(RENEW_REFILL_MIN)
        );
        // A year's certificates: the ceiling is 1 h.
        let y = moat_pki::NodeId::generate();
        let year = Duration::from_secs(365 * 86_400);
        for _ in 0..RENEW_BURST {
            r.check(y, situation(0, None), year, t).unwrap();
        }
        assert_eq!(
            r.check(y, situation(0, None), year, t),
            Err(RENEW_REFILL_MAX)
        );
    }

    #[test]
    fn a_new_situation_gives_a_fresh_burst() {
        let t = Instant::now();
        let mut r = Renewals::default();
        let id = moat_pki::NodeId::generate();
        let day = Duration::from_secs(86_400);
        // Ten back-to-back CA rotations (start, finish): never held back.
        for g in 0..10u64 {
            for s in [situation(g, Some(g + 1)), situation(g + 1, None)] {
                assert_eq!(r.check(id, s.clone(), day, t), Ok(()), "{s:?}");
                assert_eq!(r.check(id, s, day, t), Ok(()), "a retry");
            }
        }
        // The last situation has one renewal left of its burst.
        let mut manager = situation(10, None);
        assert_eq!(r.check(id, manager.clone(), day, t), Ok(()));
        assert!(r.check(id, manager.clone(), day, t).is_err());
        manager.role = moat_pki::Role::Manager;
        assert_eq!(r.check(id, manager, day, t), Ok(()), "a promotion");
    }

    #[test]
    fn failed_renewals_are_given_back() {
        let t = Instant::now();
        let mut r = Renewals::default();
        let id = moat_pki::NodeId::generate();
        let day = Duration::from_secs(86_400);
        // An outage: a hundred attempts, each failing and given back.
        for _ in 0..100 {
            assert_eq!(r.check(id, situation(0, None), day, t), Ok(()));
            r.refund(id);
        }
        for _ in 0..RENEW_BURST {
            assert_eq!(r.check(id, situation(0, None), day, t), Ok(()));
        }
        assert!(r.check(id, situation(0, None), day, t).is_err());
        r.refund(moat_pki::NodeId::generate()); // unknown: nothing happens
    }

    #[test]
    fn forwarded_events_past_the_burst_wait_their_turn() {
        let t = Instant::now();
        let mut f = Forwards::default();
        let id = moat_pki::NodeId::generate();
        let mut sent = 0;
        for _ in 0..10 {
            sent += f.allow(id, 64, t);
        }
        assert_eq!(sent, FORWARD_BURST as usize);
        assert_eq!(f.deferred, 640 - u64::from(FORWARD_BURST));
        assert_eq!(f.allow(id, 64, t + FORWARD_REFILL / 2), 0);
        assert_eq!(f.allow(id, 64, t + FORWARD_REFILL * 3), 3);
        // Another node has its own.
        assert_eq!(f.allow(moat_pki::NodeId::generate(), 64, t), 64);
    }
}
