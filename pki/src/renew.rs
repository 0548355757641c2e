//! When a certificate should be renewed.

use rand_core::RngCore;
use time::{Duration, OffsetDateTime};

/// Earliest point of the renewal window, as a fraction of the lifetime.
pub const RENEW_FROM: f64 = 0.5;
/// Latest point of the renewal window, as a fraction of the lifetime.
pub const RENEW_UNTIL: f64 = 0.8;

/// The instant at which a certificate valid from `not_before` to `not_after`
/// should be renewed: uniformly at random between 50 % and 80 % of its
/// lifetime, so that a cluster's nodes do not all renew at once.
///
/// A certificate with no lifetime (`not_after <= not_before`) is due now:
/// the function returns `not_before`.
pub fn renewal_time(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    rng: &mut impl RngCore,
) -> OffsetDateTime {
    let lifetime = (not_after - not_before).whole_nanoseconds();
    if lifetime <= 0 {
        return not_before;
    }
    // Window [50 %, 80 %) of the lifetime; lifetime*3/10 fits easily in i128.
    let start = lifetime / 2;
    let span = (lifetime * 3 / 10) as u128;
    // Map a uniform u64 onto [0, span) by multiplication, without modulo bias
    // worth the name (span < 2^64 for any lifetime below ~580 years).
    let offset = (span * u128::from(rng.next_u64())) >> 64;
    let nanos = start + offset as i128;
    let secs = (nanos / 1_000_000_000) as i64;
    let subsec = (nanos % 1_000_000_000) as i32;
    not_before + Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::{Duration, OffsetDateTime, RENEW_FROM, RENEW_UNTIL, renewal_time};
    use proptest::prelude::*;
    use rand_core::{CryptoRng, Error, RngCore};

    /// An RngCore that returns a fixed value, to probe the window edges.
    struct Fixed(u64);
    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            self.0 as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0 as u8)
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl CryptoRng for Fixed {}

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-01-01 00:00 UTC)
    }

    #[test]
    fn window_edges() {
        let nb = t0();
        let na = nb + Duration::hours(24);
        assert_eq!(
            renewal_time(nb, na, &mut Fixed(0)),
            nb + Duration::hours(12)
        );
        let latest = renewal_time(nb, na, &mut Fixed(u64::MAX));
        assert!(latest < nb + Duration::minutes(24 * 48));
        assert!(latest > nb + Duration::minutes(24 * 48) - Duration::seconds(1));
        assert_eq!(renewal_time(nb, nb, &mut Fixed(7)), nb);
        assert_eq!(renewal_time(na, nb, &mut Fixed(7)), na);
    }

    #[test]
    fn spread_is_roughly_uniform() {
        let nb = t0();
        let na = nb + Duration::hours(10);
        let mut buckets = [0u32; 3];
        let mut rng = rand_core::OsRng;
        for _ in 0..3000 {
            let at = renewal_time(nb, na, &mut rng);
            let hours = (at - nb).as_seconds_f64() / 3600.0;
            assert!((5.0..8.0).contains(&hours), "{hours}");
            buckets[((hours - 5.0) as usize).min(2)] += 1;
        }
        // Each one-hour third of the window should get about 1000 draws.
        for b in buckets {
            assert!((800..1200).contains(&b), "{buckets:?}");
        }
    }

    proptest! {
        #[test]
        fn always_inside_window(secs in 60i64..(400 * 86400), r in any::<u64>()) {
            let nb = t0();
            let na = nb + Duration::seconds(secs);
            let at = renewal_time(nb, na, &mut Fixed(r));
            let life = (na - nb).as_seconds_f64();
            let frac = (at - nb).as_seconds_f64() / life;
            prop_assert!((RENEW_FROM - 1e-9..RENEW_UNTIL).contains(&frac), "{frac}");
        }
    }
}
