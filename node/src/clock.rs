//! The daemon's one clock.
//!
//! Every reading of the time in the daemon — certificate validity, token
//! and rotation ages, audit record times, heartbeat ages and deadlines —
//! goes through one [`Clock`], handed to each part that needs it. The
//! TLS configurations and the transport check peers' certificates
//! against the same clock ([`moat_pki::Clock`]).
//!
//! A clock is the system's, shifted by an offset that only grows:
//!
//! * `0` for every daemon an operator runs;
//! * a fixed lead (at most a century) set at start with the hidden, danger-named daemon
//!   option `--danger-clock-ahead` (for tests that need a cluster to have
//!   been down longer than certificates live, without sleeping; it logs a
//!   warning at start and is never needed in production);
//! * moved forward by unit tests ([`Clock::advance`]).
//!
//! Wall time and monotonic time move together, so a deadline computed
//! from [`Clock::instant`] and a certificate checked against
//! [`Clock::now`] agree.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moat_pki::OffsetDateTime;

/// The furthest a clock runs ahead: a century, so that adding the lead to
/// the system's time can never overflow (a larger `--danger-clock-ahead`
/// is cut to this, not a panic).
const MAX_AHEAD_MS: u64 = 100 * 366 * 24 * 3600 * 1000;

/// The daemon's clock (cheap to clone; clones share the offset).
#[derive(Debug, Clone)]
pub struct Clock {
    /// How far ahead of the system clock, in milliseconds.
    ahead_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::danger_ahead(Duration::ZERO)
    }

    /// The system clock run `ahead`: certificates, tokens and liveness see
    /// a later time than the machine's. For tests only (see the module
    /// docs).
    pub fn danger_ahead(ahead: Duration) -> Self {
        Self {
            ahead_ms: Arc::new(AtomicU64::new(
                u64::try_from(ahead.as_millis()).map_or(MAX_AHEAD_MS, |ms| ms.min(MAX_AHEAD_MS)),
            )),
        }
    }

    /// How far ahead of the system clock this clock runs.
    pub fn ahead(&self) -> Duration {
        Duration::from_millis(self.ahead_ms.load(Ordering::SeqCst))
    }

    /// Moves this clock (and its clones) forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(MAX_AHEAD_MS);
        let _ = self
            .ahead_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(ms).min(MAX_AHEAD_MS))
            });
    }

    /// The current time.
    pub fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + self.ahead()
    }

    /// The current time in Unix seconds.
    pub fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    /// The current time in Unix milliseconds (the orchestrator's unit).
    pub fn unix_ms(&self) -> i64 {
        i64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    /// The current monotonic instant (for deadlines and ages).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    /// How long ago `earlier` was (zero if it is in the future).
    pub fn since(&self, earlier: Instant) -> Duration {
        self.instant().saturating_duration_since(earlier)
    }
}

impl moat_pki::Clock for Clock {
    fn now(&self) -> OffsetDateTime {
        Clock::now(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_wall_and_monotonic_time_and_every_clone() {
        let clock = Clock::system();
        let copy = clock.clone();
        let (wall, mono) = (copy.now(), copy.instant());
        clock.advance(Duration::from_secs(3600));
        assert!(copy.now() - wall >= time::Duration::seconds(3600));
        assert!(copy.instant() - mono >= Duration::from_secs(3600));
        assert!(copy.since(mono) >= Duration::from_secs(3600));
        assert_eq!(
            copy.since(copy.instant() + Duration::from_secs(5)),
            Duration::ZERO
        );
    }

    /// A lead too large to add to the time is cut, not a panic.
    #[test]
    fn an_absurd_lead_is_cut_to_a_century() {
        let clock = Clock::danger_ahead(Duration::MAX);
        assert_eq!(clock.ahead(), Duration::from_millis(MAX_AHEAD_MS));
        clock.advance(Duration::MAX);
        assert_eq!(clock.ahead(), Duration::from_millis(MAX_AHEAD_MS));
        assert!(clock.now() > OffsetDateTime::now_utc());
        assert!(clock.since(Instant::now()) >= Duration::from_secs(3600));
    }

    #[test]
    fn a_clock_run_ahead_is_ahead_of_the_system() {
        let clock = Clock::danger_ahead(Duration::from_secs(62));
        let lead = clock.unix() - OffsetDateTime::now_utc().unix_timestamp();
        assert!((61..=63).contains(&lead), "{lead}");
        let pki: &dyn moat_pki::Clock = &clock;
        assert!(pki.now() - OffsetDateTime::now_utc() >= time::Duration::seconds(61));
    }
}
