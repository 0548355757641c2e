//! The unlock gate of a locked node: how fast keys may be guessed, and the
//! Shamir shares given so far.
//!
//! A locked manager takes unlock attempts from its local operator: the
//! whole key, or one share at a time. [`UnlockGate`] decides what happens
//! to each one; it is pure (the caller passes the time in, and decides with
//! a closure whether a key opens the node), reads no clock and does no I/O.
//!
//! Throttling: after [`FREE_FAILURES`] failures in a row, nothing is tried
//! until 1 s has passed, then 2 s after the next failure, 4 s, … up to
//! [`MAX_BACKOFF`]; during the wait no guess is answered, not even the
//! right key. A success ends it. Only a well-formed key that does not open
//! the node counts as a failure, whether given whole or rebuilt from K
//! shares (then it counts once, and the shares are dropped). Text that
//! does not parse never reaches the gate (its caller may count it with
//! [`UnlockGate::count_failure`]); a share the set refuses (given twice)
//! changes nothing.
//!
//! Worst case: an attacker who can reach the gate gets 5 guesses at once,
//! then one per backoff; from the 14th failure on, one every 5 minutes
//! (about 290 a day) at a 256-bit key. The state is kept in memory and a
//! restart resets it, which costs the attacker a restart per few guesses.
//! Memory: one [`ShareSet`] (at most 16 shares, allocated once).
//!
//! Shares: the first share fixes the split. A share of another split (an
//! older or newer one, or another K or N) sets the collected shares aside
//! and starts over with it, so that the holder of a stale share cannot
//! block the others until a restart; the caller is told
//! ([`SetAside`]). Once K shares are in, they are combined, dropped, and
//! the rebuilt key is tried like a whole one.

use std::time::{Duration, Instant};

use crate::error::LockError;
use crate::key::UnlockKey;
use crate::shamir::{ShareProgress, ShareSet, SplitInfo, UnlockShare};

/// Failures in a row answered at once; from the next failure on, each
/// further attempt has to wait.
pub const FREE_FAILURES: u32 = 5;

/// The longest wait between attempts: 5 minutes.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What an operator gives a locked node, already parsed.
///
/// `Debug` shows no key material (see [`UnlockKey`] and [`UnlockShare`]);
/// both are zeroized when dropped, whatever the gate does with them.
#[derive(Debug)]
pub enum UnlockInput {
    /// The whole unlock key.
    Key(UnlockKey),
    /// One share of it.
    Share(UnlockShare),
}

/// What became of one attempt (see [`UnlockGate::attempt`]).
#[derive(Debug)]
#[must_use]
pub enum Attempt<T, E> {
    /// The key (given whole, or rebuilt from shares) opened the node; this
    /// is what the caller's check returned. Failures are forgotten and no
    /// share is kept.
    Unlocked(T),
    /// A share was accepted; more are needed.
    NeedMore {
        /// Shares given, needed and made.
        progress: ShareProgress,
        /// Set when this share belongs to another split than the shares
        /// given before, which were dropped to start over with it.
        set_aside: Option<SetAside>,
    },
    /// Refused; see why.
    Refused(Refusal<E>),
}

/// Why an attempt was refused.
#[derive(Debug)]
pub enum Refusal<E> {
    /// Too many failures in a row: nothing was tried (a share was not
    /// added either). Not counted.
    Throttled(Throttled),
    /// The key does not open the node. Counted as one failure. With
    /// `from_shares`, the key was rebuilt from K shares (of a wrong split,
    /// e.g. one made before a rotation, or forged ones), which were
    /// dropped.
    WrongKey {
        /// Whether the key was rebuilt from shares.
        from_shares: bool,
    },
    /// The share set refused the share ([`LockError::DuplicateShare`]): the
    /// set is unchanged. Not counted.
    ShareRefused(LockError),
    /// K shares were in but did not combine (a bug: shares that parse
    /// always combine). They were dropped. Not counted.
    SharesDidNotCombine(LockError),
    /// The caller's check could not tell (its error, e.g. reading a file
    /// failed). Not counted; shares that were combined for it are dropped.
    CheckFailed(E),
}

/// A refusal while the backoff runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long until the next attempt is answered.
    pub retry_after: Duration,
    /// Failures in a row so far.
    pub failures: u32,
}

/// Shares dropped because a share of another split came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAside {
    /// How many shares were dropped.
    pub dropped: u8,
    /// The split they belonged to.
    pub expected: SplitInfo,
    /// The split of the share that replaced them.
    pub found: SplitInfo,
}

/// The unlock throttle and share collection of one locked node (see the
/// module docs). It lives as long as the locked state.
///
/// `Debug` shows the failure count, the backoff and which shares were
/// given (split and indices), never share bytes.
#[derive(Debug, Default)]
pub struct UnlockGate {
    failures: u32,
    not_before: Option<Instant>,
    shares: ShareSet,
}

impl UnlockGate {
    /// A gate with no failures and no shares.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one attempt at `now`.
    ///
    /// While throttled, refuses at once: `check` is not called and a share
    /// is not added. A share that leaves the set short of K is
    /// [`Attempt::NeedMore`]. A whole key, or the key rebuilt from K
    /// shares, goes to `check`, which says whether it opens the node:
    /// `Ok(Some(value))` opens it (the value comes back in
    /// [`Attempt::Unlocked`]; the check may move the key into it),
    /// `Ok(None)` does not (a failure), `Err(e)` could not tell (not a
    /// failure).
    pub fn attempt<T, E>(
        &mut self,
        input: UnlockInput,
        now: Instant,
        check: impl FnOnce(UnlockKey) -> Result<Option<T>, E>,
    ) -> Attempt<T, E> {
        if let Some(throttled) = self.throttled(now) {
            return Attempt::Refused(Refusal::Throttled(throttled));
        }
        let (key, from_shares) = match input {
            UnlockInput::Key(key) => (key, false),
            UnlockInput::Share(share) => match self.add_share(share) {
                Ok(key) => (key, true),
                Err(answer) => return answer,
            },
        };
        match check(key) {
            Ok(Some(value)) => {
                self.failures = 0;
                self.not_before = None;
                self.shares.clear();
                Attempt::Unlocked(value)
            }
            Ok(None) => {
                self.count_failure(now);
                Attempt::Refused(Refusal::WrongKey { from_shares })
            }
            Err(e) => Attempt::Refused(Refusal::CheckFailed(e)),
        }
    }

    /// `Some` while an attempt at `now` would be refused unanswered.
    pub fn throttled(&self, now: Instant) -> Option<Throttled> {
        match self.not_before {
            Some(t) if now < t => Some(Throttled {
                retry_after: t - now,
                failures: self.failures,
            }),
            _ => None,
        }
    }

    /// Counts a failure at `now` that the gate did not see, for a caller
    /// that also counts input that did not parse. [`attempt`](Self::attempt)
    /// counts its own.
    pub fn count_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.failures >= FREE_FAILURES {
            let doublings = (self.failures - FREE_FAILURES).min(16);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_BACKOFF);
            self.not_before = now.checked_add(wait).or(self.not_before);
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The shares collected so far, or `None` before the first one.
    pub fn progress(&self) -> Option<ShareProgress> {
        self.shares.progress()
    }
}

impl UnlockGate {
    /// Adds a share; the rebuilt key once K are in (the set is then
    /// empty), else the attempt's answer.
    fn add_share<T, E>(&mut self, share: UnlockShare) -> Result<UnlockKey, Attempt<T, E>> {
        // A share of another split starts the collection over (the set
        // would refuse it).
        let set_aside = match self.shares.progress() {
            Some(p) if p.split() != share.split() => {
                let aside = SetAside {
                    dropped: p.have(),
                    expected: p.split(),
                    found: share.split(),
                };
                self.shares.clear();
                Some(aside)
            }
            _ => None,
        };
        let progress = match self.shares.add(share) {
            Ok(p) => p,
            Err(e) => return Err(Attempt::Refused(Refusal::ShareRefused(e))),
        };
        if !progress.is_complete() {
            return Err(Attempt::NeedMore {
                progress,
                set_aside,
            });
        }
        let combined = self.shares.combine();
        self.shares.clear();
        combined.map_err(|e| Attempt::Refused(Refusal::SharesDidNotCombine(e)))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::shamir::split_unlock_key;

    type Answer = Attempt<UnlockKey, &'static str>;

    fn key() -> UnlockKey {
        UnlockKey::generate().unwrap()
    }

    fn copy(key: &UnlockKey) -> UnlockKey {
        key.expose_for_operator().parse().unwrap()
    }

    fn share_copy(share: &UnlockShare) -> UnlockInput {
        UnlockInput::Share(share.expose_for_operator().parse().unwrap())
    }

    /// Tries `input`, opening with `right` only.
    fn try_with(
        gate: &mut UnlockGate,
        input: UnlockInput,
        now: Instant,
        right: &UnlockKey,
    ) -> Answer {
        gate.attempt(input, now, |k: UnlockKey| Ok((k == *right).then_some(k)))
    }

    fn is_wrong(a: &Answer, shares: bool) -> bool {
        matches!(a, Attempt::Refused(Refusal::WrongKey { from_shares }) if *from_shares == shares)
    }

    fn retry_after(gate: &UnlockGate, now: Instant) -> Option<Duration> {
        gate.throttled(now).map(|t| t.retry_after)
    }

    #[test]
    fn the_right_key_unlocks_and_hands_back_the_checks_value() {
        let right = key();
        let mut gate = UnlockGate::new();
        let a = try_with(
            &mut gate,
            UnlockInput::Key(copy(&right)),
            Instant::now(),
            &right,
        );
        assert!(matches!(a, Attempt::Unlocked(k) if k == right));
        assert_eq!(gate.failures(), 0);
    }

    #[test]
    fn a_wrong_key_is_counted() {
        let (right, t0) = (key(), Instant::now());
        let mut gate = UnlockGate::new();
        for n in 1..=4 {
            assert!(is_wrong(
                &try_with(&mut gate, UnlockInput::Key(key()), t0, &right),
                false
            ));
            assert_eq!(gate.failures(), n);
            assert_eq!(gate.throttled(t0), None, "the first failures are free");
        }
    }

    #[test]
    fn after_five_failures_nothing_is_answered_until_the_wait_is_over() {
        let (right, t0) = (key(), Instant::now());
        let mut gate = UnlockGate::new();
        for _ in 0..FREE_FAILURES {
            let _ = try_with(&mut gate, UnlockInput::Key(key()), t0, &right);
        }
        let throttled = Throttled {
            retry_after: Duration::from_secs(1),
            failures: 5,
        };
        assert_eq!(gate.throttled(t0), Some(throttled));
        // Even the right key waits.
        let a = try_with(&mut gate, UnlockInput::Key(copy(&right)), t0, &right);
        assert!(matches!(a, Attempt::Refused(Refusal::Throttled(t)) if t == throttled));
        let almost = t0 + Duration::from_millis(999);
        assert_eq!(retry_after(&gate, almost), Some(Duration::from_millis(1)));
        // Refused attempts do not count.
        assert_eq!(gate.failures(), 5);
        let after = t0 + Duration::from_secs(1);
        assert_eq!(gate.throttled(after), None);
        let a = try_with(&mut gate, UnlockInput::Key(copy(&right)), after, &right);
        assert!(matches!(a, Attempt::Unlocked(_)));
    }

    #[test]
    fn the_wait_doubles_up_to_five_minutes() {
        let (right, mut now) = (key(), Instant::now());
        let mut gate = UnlockGate::new();
        let mut waits = Vec::new();
        for _ in 0..20 {
            let a = try_with(&mut gate, UnlockInput::Key(key()), now, &right);
            assert!(is_wrong(&a, false));
            let wait = retry_after(&gate, now).unwrap_or_default();
            waits.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(
            waits,
            [
                0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300, 300, 300, 300
            ]
        );
        assert_eq!(MAX_BACKOFF, Duration::from_secs(300));
        // The count itself saturates rather than wrapping to "free" again.
        gate.failures = u32::MAX;
        gate.count_failure(now);
        assert_eq!(gate.failures(), u32::MAX);
        assert_eq!(retry_after(&gate, now), Some(MAX_BACKOFF));
    }

    #[test]
    fn a_success_forgets_the_failures() {
        let (right, t0) = (key(), Instant::now());
        let mut gate = UnlockGate::new();
        for _ in 0..6 {
            gate.count_failure(t0);
        }
        let later = t0 + Duration::from_secs(2);
        let a = try_with(&mut gate, UnlockInput::Key(copy(&right)), later, &right);
        assert!(matches!(a, Attempt::Unlocked(_)));
        assert_eq!(gate.failures(), 0);
        assert_eq!(gate.throttled(later), None);
        // The next failure is free again.
        let _ = try_with(&mut gate, UnlockInput::Key(key()), later, &right);
        assert_eq!((gate.failures(), gate.throttled(later)), (1, None));
    }

    #[test]
    fn k_shares_unlock_one_at_a_time() {
        let (right, t0) = (key(), Instant::now());
        let shares = split_unlock_key(&right, 3, 5).unwrap();
        let mut gate = UnlockGate::new();
        let checks = Cell::new(0);
        let mut give = |share: &UnlockShare| -> Answer {
            gate.attempt(share_copy(share), t0, |k: UnlockKey| {
                checks.set(checks.get() + 1);
                Ok((k == right).then_some(k))
            })
        };
        for (share, have) in [(&shares[4], 1), (&shares[1], 2)] {
            match give(share) {
                Attempt::NeedMore {
                    progress,
                    set_aside: None,
                } => assert_eq!(
                    (progress.have(), progress.need(), progress.total()),
                    (have, 3, 5)
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(checks.get(), 0, "no key is tried before K shares are in");
        assert!(matches!(give(&shares[2]), Attempt::Unlocked(k) if k == right));
        assert_eq!(checks.get(), 1);
        assert_eq!(gate.progress(), None, "no share is kept");
    }

    #[test]
    fn a_repeated_share_is_refused_and_not_counted() {
        let (right, t0) = (key(), Instant::now());
        let shares = split_unlock_key(&right, 2, 3).unwrap();
        let mut gate = UnlockGate::new();
        let _ = try_with(&mut gate, share_copy(&shares[0]), t0, &right);
        let a = try_with(&mut gate, share_copy(&shares[0]), t0, &right);
        assert!(
            matches!(
                a,
                Attempt::Refused(Refusal::ShareRefused(LockError::DuplicateShare {
                    index: 1
                }))
            ),
            "{a:?}"
        );
        assert_eq!(gate.failures(), 0);
        assert_eq!(
            gate.progress().map(|p| p.have()),
            Some(1),
            "the set is unchanged"
        );
        let a = try_with(&mut gate, share_copy(&shares[2]), t0, &right);
        assert!(matches!(a, Attempt::Unlocked(_)));
    }

    #[test]
    fn shares_that_rebuild_a_wrong_key_count_once_and_are_dropped() {
        let (right, old, t0) = (key(), key(), Instant::now());
        // E.g. shares of the key before a rotation.
        let shares = split_unlock_key(&old, 3, 5).unwrap();
        let mut gate = UnlockGate::new();
        for share in &shares[..2] {
            let a = try_with(&mut gate, share_copy(share), t0, &right);
            assert!(matches!(a, Attempt::NeedMore { .. }), "{a:?}");
        }
        assert_eq!(gate.failures(), 0);
        let a = try_with(&mut gate, share_copy(&shares[2]), t0, &right);
        assert!(is_wrong(&a, true), "{a:?}");
        assert_eq!(gate.failures(), 1);
        assert_eq!(gate.progress(), None);
    }

    #[test]
    fn a_share_of_another_split_starts_over_and_is_not_counted() {
        let (right, t0) = (key(), Instant::now());
        let first = split_unlock_key(&right, 3, 5).unwrap();
        let second = split_unlock_key(&right, 2, 3).unwrap();
        let mut gate = UnlockGate::new();
        let _ = try_with(&mut gate, share_copy(&first[0]), t0, &right);
        let _ = try_with(&mut gate, share_copy(&first[1]), t0, &right);
        match try_with(&mut gate, share_copy(&second[0]), t0, &right) {
            Attempt::NeedMore {
                progress,
                set_aside: Some(aside),
            } => {
                assert_eq!((progress.have(), progress.need()), (1, 2));
                assert_eq!(aside.dropped, 2);
                assert_eq!(aside.expected, first[0].split());
                assert_eq!(aside.found, second[0].split());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gate.failures(), 0);
        let a = try_with(&mut gate, share_copy(&second[1]), t0, &right);
        assert!(matches!(a, Attempt::Unlocked(_)));
    }

    #[test]
    fn nothing_is_tried_while_throttled() {
        let (right, t0) = (key(), Instant::now());
        let shares = split_unlock_key(&right, 2, 2).unwrap();
        let mut gate = UnlockGate::new();
        let _ = try_with(&mut gate, share_copy(&shares[0]), t0, &right);
        for _ in 0..FREE_FAILURES {
            gate.count_failure(t0);
        }
        let never = |_: UnlockKey| -> Result<Option<UnlockKey>, &'static str> {
            panic!("a key was tried during the backoff")
        };
        let a = gate.attempt(UnlockInput::Key(copy(&right)), t0, never);
        assert!(matches!(a, Attempt::Refused(Refusal::Throttled(_))));
        let a = gate.attempt(share_copy(&shares[1]), t0, never);
        assert!(matches!(a, Attempt::Refused(Refusal::Throttled(_))));
        assert_eq!(
            gate.progress().map(|p| p.have()),
            Some(1),
            "the share was not added"
        );
        assert_eq!(gate.failures(), 5);
    }

    #[test]
    fn a_check_that_cannot_tell_is_not_counted() {
        let t0 = Instant::now();
        let mut gate = UnlockGate::new();
        let a: Answer = gate.attempt(UnlockInput::Key(key()), t0, |_| Err("disk error"));
        assert!(matches!(
            a,
            Attempt::Refused(Refusal::CheckFailed("disk error"))
        ));
        assert_eq!(gate.failures(), 0);
    }

    #[test]
    fn debug_shows_no_secret() {
        let right = key();
        let shares = split_unlock_key(&right, 2, 3).unwrap();
        let mut gate = UnlockGate::new();
        let _ = try_with(&mut gate, share_copy(&shares[0]), Instant::now(), &right);
        let input = share_copy(&shares[1]);
        let text = format!("{gate:?} {input:?} {:?}", UnlockInput::Key(copy(&right)));
        let key_text = right.expose_for_operator();
        let secret = |t: &str| t.rsplit('-').nth(1).unwrap().to_string();
        assert!(!text.contains(&secret(&key_text)), "{text}");
        for share in &shares {
            assert!(
                !text.contains(&secret(&share.expose_for_operator())),
                "{text}"
            );
        }
    }
}
