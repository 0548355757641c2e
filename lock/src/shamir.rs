//! Shamir secret sharing of the unlock key: any K of N shares rebuild it,
//! fewer than K reveal nothing about it.
//!
//! The arithmetic (one random polynomial of degree K − 1 over GF(2^8) per key
//! byte, Lagrange interpolation at zero) is `blahaj`'s. This module adds what
//! an operator handles: the checksummed `MOATSHARE-1-…` text form, the bounds
//! `2 <= K <= N <= 16`, a random split id so that shares of different splits
//! are never combined, and [`ShareSet`], which collects shares one at a time.
//! The format is described in `docs/formats/unlock-key-shares.md`.

use std::fmt;
use std::str::FromStr;

use moat_codec::{Armor, ArmorError, base32};
use zeroize::Zeroizing;

use crate::error::{LockError, ShareFormatError};
use crate::key::{KEY_LEN, UnlockKey, fill_random};

/// Length of a split id in bytes.
const SPLIT_ID_LEN: usize = 4;

/// The text form of a share:
/// `MOATSHARE-1-<split id: 7>-<K: 2>-<N: 2>-<index: 2>-<share: 52>-<check: 8>`.
const SHARE_ARMOR: Armor = Armor {
    prefix: "MOATSHARE",
    version: 1,
    fields: &[SPLIT_ID_LEN, 1, 1, 1, KEY_LEN],
};

/// Splits `key` into `total` (N) shares, any `threshold` (K) of which rebuild
/// it with a [`ShareSet`].
///
/// Requires `2 <= K <= N <= 16` ([`UnlockShare::MIN_THRESHOLD`],
/// [`UnlockShare::MAX_TOTAL`]); anything else is
/// [`LockError::SplitParams`]. The shares are numbered 1 to N and carry a
/// split id of 4 random bytes (not derived from the key), so that shares of
/// two splits of the same key are never combined. Every call makes a new,
/// independent split: fewer than K shares of it reveal nothing about the key,
/// whatever else of other splits is known.
///
/// All randomness (split id and polynomial coefficients) comes from the
/// operating system; if it fails the result is [`LockError::Random`] and
/// nothing is returned.
pub fn split_unlock_key(
    key: &UnlockKey,
    threshold: u8,
    total: u8,
) -> Result<Vec<UnlockShare>, LockError> {
    if !valid_split(threshold, total) {
        return Err(LockError::SplitParams { threshold, total });
    }
    let mut id = [0u8; SPLIT_ID_LEN];
    fill_random(&mut id)?;
    let split = SplitInfo {
        id: SplitId(id),
        threshold,
        total,
    };

    let mut rng = OsRandom::default();
    // blahaj's shares zeroize their bytes on drop, as do the polynomials held
    // by the dealer iterator.
    let dealt: Vec<blahaj::Share> = blahaj::Sharks(threshold)
        .dealer_rng(key.secret(), &mut rng)
        .take(usize::from(total))
        .collect();
    if rng.failed {
        return Err(LockError::Random);
    }

    let mut shares = Vec::with_capacity(usize::from(total));
    for (share, index) in dealt.iter().zip(1..=total) {
        // `[x, y_0, …, y_31]`; blahaj evaluates at x = 1, 2, …, so x is the
        // index.
        let raw = Zeroizing::new(Vec::from(share));
        let (&x, y) = raw.split_first().ok_or(SPLIT_FAILED)?;
        if x != index || y.len() != KEY_LEN {
            return Err(SPLIT_FAILED);
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(y);
        shares.push(UnlockShare {
            split,
            index,
            bytes,
        });
    }
    if shares.len() != usize::from(total) {
        return Err(SPLIT_FAILED);
    }
    Ok(shares)
}

/// One share of a split unlock key: split id, K, N, its index (1..=N) and 32
/// share bytes.
///
/// Its text form (`MOATSHARE-1-…`, [`UnlockShare::TEXT_LEN`] characters) is
/// produced only by [`expose_for_operator`](Self::expose_for_operator) and
/// read with [`FromStr`]. It has no `Display`; its `Debug` shows the split
/// and the index but prints the share bytes as `…`. The share bytes are
/// zeroized on drop.
pub struct UnlockShare {
    split: SplitInfo,
    index: u8,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl UnlockShare {
    /// Smallest K: one share alone never unlocks.
    pub const MIN_THRESHOLD: u8 = 2;
    /// Largest N: at most 16 shares per split.
    pub const MAX_TOTAL: u8 = 16;
    /// Length of the text form in characters (90).
    pub const TEXT_LEN: usize = SHARE_ARMOR.text_len();

    /// The split this share belongs to: split id, K and N.
    pub fn split(&self) -> SplitInfo {
        self.split
    }

    /// The random id of the split this share belongs to.
    pub fn split_id(&self) -> SplitId {
        self.split.id
    }

    /// K: how many shares of this split rebuild the key.
    pub fn threshold(&self) -> u8 {
        self.split.threshold
    }

    /// N: how many shares this split has.
    pub fn total(&self) -> u8 {
        self.split.total
    }

    /// This share's number, 1..=N.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// The text form, for handing to one share holder. This is the only way
    /// to get the share bytes out of this type; grep for it in review.
    pub fn expose_for_operator(&self) -> Zeroizing<String> {
        SHARE_ARMOR.encode(&[
            &self.split.id.0,
            &[self.split.threshold],
            &[self.split.total],
            &[self.index],
            self.bytes.as_slice(),
        ])
    }
}

impl FromStr for UnlockShare {
    type Err = LockError;

    /// Parses `MOATSHARE-1-…`; surrounding whitespace is ignored. Format
    /// mistakes (prefix, version, length, character, checksum) and
    /// impossible values (K, N, index) each have their own
    /// [`ShareFormatError`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = SHARE_ARMOR.decode(s).map_err(|e| match e {
            ArmorError::Prefix { .. } if s.trim_start().starts_with("MOATKEY-") => {
                ShareFormatError::WholeKey
            }
            e => ShareFormatError::from(e),
        })?;
        let [id, threshold, total, index, share] = fields.as_slice() else {
            return Err(ShareFormatError::Malformed.into());
        };
        let id: [u8; SPLIT_ID_LEN] = id
            .as_slice()
            .try_into()
            .map_err(|_| ShareFormatError::Malformed)?;
        let (threshold, total, index) = (one_byte(threshold)?, one_byte(total)?, one_byte(index)?);
        if !valid_split(threshold, total) {
            return Err(ShareFormatError::Split { threshold, total }.into());
        }
        if index == 0 || index > total {
            return Err(ShareFormatError::Index { index, total }.into());
        }
        if share.len() != KEY_LEN {
            return Err(ShareFormatError::Malformed.into());
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(share);
        Ok(UnlockShare {
            split: SplitInfo {
                id: SplitId(id),
                threshold,
                total,
            },
            index,
            bytes,
        })
    }
}

impl fmt::Debug for UnlockShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockShare")
            .field("split_id", &self.split.id)
            .field("threshold", &self.split.threshold)
            .field("total", &self.split.total)
            .field("index", &self.index)
            .field("share", &format_args!("…"))
            .finish()
    }
}

/// The random id that tells the splits of unlock keys apart: 4 bytes, shown
/// as the 7 base32 characters that follow `MOATSHARE-1-` in every share of
/// the split.
///
/// It is not secret and not derived from the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitId([u8; SPLIT_ID_LEN]);

impl fmt::Display for SplitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for SplitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SplitId({self})")
    }
}

/// What all shares of one split have in common: split id, K and N. Not
/// secret.
///
/// Displayed as `split 0a1b2c3, 3 of 5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SplitInfo {
    id: SplitId,
    threshold: u8,
    total: u8,
}

impl SplitInfo {
    /// The split id.
    pub fn id(&self) -> SplitId {
        self.id
    }

    /// K: how many shares rebuild the key.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// N: how many shares were made.
    pub fn total(&self) -> u8 {
        self.total
    }
}

impl fmt::Display for SplitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "split {}, {} of {}", self.id, self.threshold, self.total)
    }
}

/// Shares collected so far, as a locked node receives them: one at a time,
/// possibly from different people.
///
/// The first share fixes the split; later shares must belong to it
/// ([`LockError::ShareFromOtherSplit`]) and have an index not given before
/// ([`LockError::DuplicateShare`]). Refused shares are dropped and zeroized.
/// Once K shares are in, [`combine`](Self::combine) rebuilds the key.
///
/// Combining does not check the key: shares made by moat and accepted here
/// always rebuild the key they were split from, but a forged share with a
/// valid checksum would rebuild a wrong one. Use the result to unseal (a
/// wrong key is [`LockError::WrongKey`] there), and [`clear`](Self::clear)
/// the set if that fails.
///
/// Shares are held in memory allocated once for [`UnlockShare::MAX_TOTAL`]
/// shares, so that adding never leaves copies behind in freed memory, and are
/// zeroized on [`clear`](Self::clear) and on drop. `Debug` shows the split
/// and the indices given, never share bytes.
pub struct ShareSet {
    shares: Vec<UnlockShare>,
}

impl ShareSet {
    /// An empty set.
    pub fn new() -> Self {
        ShareSet {
            shares: Vec::with_capacity(usize::from(UnlockShare::MAX_TOTAL)),
        }
    }

    /// Adds one share and says how far the set is from complete.
    ///
    /// Refuses a share of another split (split id, K or N differ from the
    /// first share's) and a second share with the same index; the set is
    /// unchanged in both cases. Shares beyond K are accepted but not needed.
    pub fn add(&mut self, share: UnlockShare) -> Result<ShareProgress, LockError> {
        if let Some(first) = self.shares.first() {
            if first.split != share.split {
                return Err(LockError::ShareFromOtherSplit {
                    expected: first.split,
                    found: share.split,
                });
            }
            if self.shares.iter().any(|s| s.index == share.index) {
                return Err(LockError::DuplicateShare { index: share.index });
            }
        }
        // At most N <= MAX_TOTAL distinct shares get here, so this never
        // reallocates.
        debug_assert!(self.shares.len() < self.shares.capacity());
        self.shares.push(share);
        self.progress().ok_or(LockError::Crypto {
            what: "share collection",
        })
    }

    /// Progress so far, or `None` before the first share.
    pub fn progress(&self) -> Option<ShareProgress> {
        let first = self.shares.first()?;
        Some(ShareProgress {
            split: first.split,
            // At most MAX_TOTAL (16) shares are ever held.
            have: u8::try_from(self.shares.len()).unwrap_or(u8::MAX),
        })
    }

    /// True before the first share (and after [`clear`](Self::clear)).
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Rebuilds the unlock key from the first K shares given.
    ///
    /// With fewer than K shares this is [`LockError::NotEnoughShares`]
    /// ("need 3 of 5 shares, have 2"); with none, [`LockError::NoShares`].
    /// The set is left as it is either way.
    pub fn combine(&self) -> Result<UnlockKey, LockError> {
        let progress = self.progress().ok_or(LockError::NoShares)?;
        if !progress.is_complete() {
            return Err(LockError::NotEnoughShares {
                need: progress.need(),
                total: progress.total(),
                have: progress.have(),
            });
        }
        let need = usize::from(progress.need());
        let mut points = Vec::with_capacity(need);
        for share in self.shares.iter().take(need) {
            let mut raw = Zeroizing::new([0u8; 1 + KEY_LEN]);
            raw[0] = share.index;
            raw[1..].copy_from_slice(share.bytes.as_slice());
            points.push(blahaj::Share::try_from(raw.as_slice()).map_err(|_| COMBINE_FAILED)?);
        }
        // blahaj returns the secret in a plain Vec: wrap it at once.
        let secret = Zeroizing::new(
            blahaj::Sharks(progress.need())
                .recover(&points)
                .map_err(|_| COMBINE_FAILED)?,
        );
        if secret.len() != KEY_LEN {
            return Err(COMBINE_FAILED);
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&secret);
        Ok(UnlockKey::from_secret(bytes))
    }

    /// Drops every share collected so far (zeroizing them), e.g. after the
    /// rebuilt key failed to unseal or to start over with another split.
    pub fn clear(&mut self) {
        self.shares.clear();
    }
}

impl Default for ShareSet {
    fn default() -> Self {
        ShareSet::new()
    }
}

impl fmt::Debug for ShareSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let given: Vec<u8> = self.shares.iter().map(|s| s.index).collect();
        f.debug_struct("ShareSet")
            .field("split", &self.shares.first().map(|s| s.split))
            .field("given", &given)
            .finish()
    }
}

/// How far a [`ShareSet`] is: M shares given, K needed, N in the split.
///
/// Displayed as `have 2, need 3 of 5 shares`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareProgress {
    split: SplitInfo,
    have: u8,
}

impl ShareProgress {
    /// M: distinct shares given so far.
    pub fn have(&self) -> u8 {
        self.have
    }

    /// K: shares needed to rebuild the key.
    pub fn need(&self) -> u8 {
        self.split.threshold
    }

    /// N: shares in the split.
    pub fn total(&self) -> u8 {
        self.split.total
    }

    /// How many more shares are needed (0 once complete).
    pub fn remaining(&self) -> u8 {
        self.need().saturating_sub(self.have)
    }

    /// True once at least K shares are in: [`ShareSet::combine`] will
    /// succeed.
    pub fn is_complete(&self) -> bool {
        self.have >= self.need()
    }

    /// The split being collected.
    pub fn split(&self) -> SplitInfo {
        self.split
    }
}

impl fmt::Display for ShareProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "have {}, need {} of {} shares",
            self.have,
            self.need(),
            self.total()
        )
    }
}

/// blahaj's output did not have the shape it documents: a bug, not input.
const SPLIT_FAILED: LockError = LockError::Crypto {
    what: "shamir split",
};
const COMBINE_FAILED: LockError = LockError::Crypto {
    what: "shamir combine",
};

/// The policy `2 <= K <= N <= 16`.
fn valid_split(threshold: u8, total: u8) -> bool {
    UnlockShare::MIN_THRESHOLD <= threshold && threshold <= total && total <= UnlockShare::MAX_TOTAL
}

fn one_byte(field: &[u8]) -> Result<u8, ShareFormatError> {
    match field {
        [b] => Ok(*b),
        _ => Err(ShareFormatError::Malformed),
    }
}

/// The operating system's CSPRNG ([`fill_random`], as everywhere in this
/// crate) in the form blahaj 0.7 asks for: a rand_core 0.10 `CryptoRng`,
/// which cannot fail.
///
/// It holds no state, so no polynomial coefficient can be recovered from it
/// after the split. Instead of panicking on a failure it remembers it and
/// hands out zeros; [`split_unlock_key`] then discards everything dealt and
/// returns [`LockError::Random`].
#[derive(Default)]
struct OsRandom {
    failed: bool,
}

impl OsRandom {
    fn fill(&mut self, dst: &mut [u8]) {
        if self.failed || fill_random(dst).is_err() {
            self.failed = true;
            dst.fill(0);
        }
    }
}

impl rand_core_0_10::TryRng for OsRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = Zeroizing::new([0u8; 4]);
        self.fill(b.as_mut());
        Ok(u32::from_le_bytes(*b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = Zeroizing::new([0u8; 8]);
        self.fill(b.as_mut());
        Ok(u64::from_le_bytes(*b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core_0_10::TryCryptoRng for OsRandom {}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::{Aad, KeySource, seal, unseal};
    use proptest::prelude::*;

    /// Start of the 52-character share field in the text form.
    const SHARE_FIELD: std::ops::Range<usize> = 29..81;

    fn key() -> UnlockKey {
        UnlockKey::from_bytes([0x5a; KEY_LEN])
    }

    fn split(key: &UnlockKey, k: u8, n: u8) -> Vec<UnlockShare> {
        split_unlock_key(key, k, n).unwrap()
    }

    /// What an operator would paste: the text form, parsed back.
    fn retyped(share: &UnlockShare) -> UnlockShare {
        share.expose_for_operator().parse().unwrap()
    }

    fn format_error(text: &str) -> ShareFormatError {
        match text.parse::<UnlockShare>() {
            Err(LockError::ShareFormat(e)) => e,
            other => panic!("expected a share format error, got {other:?}"),
        }
    }

    /// A text with a valid checksum but any K, N and index, as only a
    /// forger (or a bug) could make.
    fn forged(threshold: u8, total: u8, index: u8) -> Zeroizing<String> {
        SHARE_ARMOR.encode(&[
            &[1, 2, 3, 4],
            &[threshold],
            &[total],
            &[index],
            &[7; KEY_LEN],
        ])
    }

    fn with_char(text: &str, position: usize, c: char) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        chars[position] = c;
        chars.into_iter().collect()
    }

    #[test]
    fn text_form_shape() {
        let shares = split(&key(), 3, 5);
        let text = shares[1].expose_for_operator();
        assert_eq!(text.len(), UnlockShare::TEXT_LEN);
        assert_eq!(
            UnlockShare::TEXT_LEN,
            9 + 1 + 1 + 1 + 7 + 3 * 3 + 1 + 52 + 1 + 8
        );
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 8);
        assert_eq!(&parts[..2], &["MOATSHARE", "1"]);
        assert_eq!(parts[2], shares[1].split_id().to_string());
        // K, N and index are one byte each in base32: 3 = "0c", 5 = "0k", 2 = "08".
        assert_eq!(&parts[3..6], &["0c", "0k", "08"]);
        assert_eq!(parts[6], &text[SHARE_FIELD]);
        assert_eq!((parts[6].len(), parts[7].len()), (52, 8));
    }

    /// Guards docs/formats/unlock-key-shares.md: its example is a valid
    /// share.
    #[test]
    fn documented_example_parses() {
        let text = "MOATSHARE-1-h8vg2n0-0c-0k-08-000g40o40k30e209185go38e1s8124gj2gahc5oo34d1m70t3ofg-1agqtint";
        let share: UnlockShare = text.parse().unwrap();
        assert_eq!(share.split_id(), SplitId([0x8a, 0x3f, 0x01, 0x5c]));
        assert_eq!(share.split().to_string(), "split h8vg2n0, 3 of 5");
        assert_eq!((share.threshold(), share.total(), share.index()), (3, 5, 2));
        let want: Vec<u8> = (0..32).collect();
        assert_eq!(share.bytes.as_slice(), want.as_slice());
        // The table of one-byte values in the document.
        let table: Vec<String> = (1..=16u8).map(|v| base32::encode(&[v])).collect();
        assert_eq!(
            table.join(" "),
            "04 08 0c 0g 0k 0o 0s 10 14 18 1c 1g 1k 1o 1s 20"
        );
    }

    #[test]
    fn round_trip_for_several_sizes() {
        for (k, n) in [(2, 2), (2, 3), (3, 5), (5, 5), (2, 16), (16, 16)] {
            let key = UnlockKey::generate().unwrap();
            let shares = split(&key, k, n);
            assert_eq!(shares.len(), usize::from(n));
            let indices: Vec<u8> = shares.iter().map(UnlockShare::index).collect();
            assert_eq!(indices, (1..=n).collect::<Vec<u8>>());
            assert!(shares.iter().all(|s| s.split() == shares[0].split()));
            assert!(shares.iter().all(|s| (s.threshold(), s.total()) == (k, n)));

            // The last K shares, given in reverse order, through their text.
            let mut set = ShareSet::new();
            for (given, share) in shares.iter().rev().take(usize::from(k)).enumerate() {
                let progress = set.add(retyped(share)).unwrap();
                assert_eq!(usize::from(progress.have()), given + 1);
                assert_eq!((progress.need(), progress.total()), (k, n));
            }
            assert!(set.progress().unwrap().is_complete());
            assert_eq!(set.combine().unwrap(), key, "{k} of {n}");

            // All N shares work too; the ones beyond K are not needed.
            let mut all = ShareSet::new();
            for share in &shares {
                all.add(retyped(share)).unwrap();
            }
            assert_eq!(all.progress().unwrap().remaining(), 0);
            assert_eq!(all.combine().unwrap(), key, "all {n}");
        }
    }

    #[test]
    fn k_minus_one_shares_do_not_combine() {
        let key = key();
        let shares = split(&key, 3, 5);
        let mut set = ShareSet::new();
        set.add(retyped(&shares[4])).unwrap();
        let progress = set.add(retyped(&shares[0])).unwrap();
        assert!(!progress.is_complete());
        assert_eq!(progress.remaining(), 1);
        assert_eq!(progress.to_string(), "have 2, need 3 of 5 shares");
        let err = set.combine().unwrap_err();
        assert_eq!(err.to_string(), "need 3 of 5 shares, have 2");
        assert!(matches!(
            err,
            LockError::NotEnoughShares {
                need: 3,
                total: 5,
                have: 2
            }
        ));
        // The set keeps what it had: the third share completes it.
        let progress = set.add(retyped(&shares[2])).unwrap();
        assert!(progress.is_complete());
        assert_eq!(set.combine().unwrap(), key);

        let shares = split(&key, 16, 16);
        let mut set = ShareSet::new();
        for share in &shares[..15] {
            set.add(retyped(share)).unwrap();
        }
        assert_eq!(
            set.combine().unwrap_err().to_string(),
            "need 16 of 16 shares, have 15"
        );
    }

    #[test]
    fn empty_set_does_not_combine() {
        let set = ShareSet::default();
        assert!(set.is_empty());
        assert!(set.progress().is_none());
        assert!(matches!(set.combine(), Err(LockError::NoShares)));
    }

    #[test]
    fn bad_split_parameters_are_refused() {
        let key = key();
        let err = split_unlock_key(&key, 3, 2).unwrap_err();
        assert!(matches!(
            err,
            LockError::SplitParams {
                threshold: 3,
                total: 2
            }
        ));
        assert!(
            err.to_string()
                .starts_with("a split needs 2 <= K <= N <= 16, got 3/2"),
            "{err}"
        );
        for (k, n) in [
            (0, 0),
            (0, 2),
            (1, 1),
            (1, 5),
            (2, 1),
            (2, 17),
            (17, 17),
            (255, 255),
        ] {
            assert!(
                matches!(
                    split_unlock_key(&key, k, n),
                    Err(LockError::SplitParams { threshold, total }) if (threshold, total) == (k, n)
                ),
                "{k}/{n}"
            );
        }
    }

    #[test]
    fn shares_of_another_split_are_refused() {
        // Two splits of the same key, with the same K and N.
        let key = key();
        let a = split(&key, 2, 3);
        let b = split(&key, 2, 3);
        assert_ne!(a[0].split_id(), b[0].split_id());
        assert_ne!(
            *a[0].expose_for_operator(),
            *b[0].expose_for_operator(),
            "each split draws new coefficients"
        );

        let mut set = ShareSet::new();
        set.add(retyped(&a[0])).unwrap();
        let err = set.add(retyped(&b[1])).unwrap_err();
        match &err {
            LockError::ShareFromOtherSplit { expected, found } => {
                assert_eq!(*expected, a[0].split());
                assert_eq!(*found, b[1].split());
            }
            other => panic!("expected ShareFromOtherSplit, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("belongs to another split"), "{message}");
        assert!(message.contains(&b[1].split_id().to_string()), "{message}");
        assert_eq!(set.progress().unwrap().have(), 1, "the set is unchanged");

        // Same split id but another K or N: still another split.
        for (k, n) in [(3, 3), (2, 4)] {
            let odd = UnlockShare {
                split: SplitInfo {
                    threshold: k,
                    total: n,
                    ..a[1].split()
                },
                index: 2,
                bytes: Zeroizing::new([0; KEY_LEN]),
            };
            assert!(matches!(
                set.add(odd),
                Err(LockError::ShareFromOtherSplit { .. })
            ));
        }

        // After clear(), the other split is welcome.
        set.clear();
        assert!(set.is_empty());
        set.add(retyped(&b[1])).unwrap();
        set.add(retyped(&b[2])).unwrap();
        assert_eq!(set.combine().unwrap(), key);
    }

    #[test]
    fn a_repeated_share_is_refused() {
        let shares = split(&key(), 3, 5);
        let mut set = ShareSet::new();
        set.add(retyped(&shares[1])).unwrap();
        let err = set.add(retyped(&shares[1])).unwrap_err();
        assert!(matches!(err, LockError::DuplicateShare { index: 2 }));
        assert_eq!(
            err.to_string(),
            "share 2 of this split was already given: give a different share"
        );
        assert_eq!(set.progress().unwrap().have(), 1, "the copy is not counted");
    }

    #[test]
    fn text_round_trips() {
        let shares = split(&key(), 3, 5);
        for share in &shares {
            let text = share.expose_for_operator();
            let back: UnlockShare = text.parse().unwrap();
            assert_eq!(back.split(), share.split());
            assert_eq!(back.index(), share.index());
            assert_eq!(*back.bytes, *share.bytes);
            assert_eq!(*back.expose_for_operator(), *text);
            // Whitespace around a pasted share is ignored.
            let padded = format!("  {}\n", text.as_str());
            assert_eq!(
                padded.parse::<UnlockShare>().unwrap().index(),
                share.index()
            );
        }
    }

    #[test]
    fn a_one_character_typo_is_a_checksum_error() {
        let text = split(&key(), 3, 5)[0].expose_for_operator();
        for position in [SHARE_FIELD.start, 40, SHARE_FIELD.end - 2, 82, 89] {
            let old = text.as_bytes()[position];
            let typo = with_char(&text, position, if old == b'7' { '8' } else { '7' });
            assert_eq!(
                format_error(&typo),
                ShareFormatError::Checksum,
                "at {position}"
            );
        }
    }

    #[test]
    fn format_mistakes_have_their_own_errors() {
        let text = split(&key(), 3, 5)[0].expose_for_operator();
        assert_eq!(
            format_error(&text.replacen("MOATSHARE", "MOATSHAER", 1)),
            ShareFormatError::Prefix
        );
        assert_eq!(format_error(""), ShareFormatError::Prefix);
        assert_eq!(
            format_error(&key().expose_for_operator()),
            ShareFormatError::WholeKey
        );
        assert_eq!(
            format_error(&text.replacen("MOATSHARE-1-", "MOATSHARE-2-", 1)),
            ShareFormatError::Version {
                found: Some(2),
                supported: 1
            }
        );
        assert_eq!(
            format_error(&text[..text.len() - 1]),
            ShareFormatError::Length {
                expected: 90,
                found: 89
            }
        );
        assert_eq!(
            format_error(&format!("{}0", text.as_str())),
            ShareFormatError::Length {
                expected: 90,
                found: 91
            }
        );
        assert_eq!(
            format_error(&with_char(&text, 40, 'Z')),
            ShareFormatError::Character { position: 40 }
        );
    }

    #[test]
    fn impossible_values_with_a_valid_checksum_are_refused() {
        for (k, n, i, want) in [
            (
                1,
                3,
                1,
                ShareFormatError::Split {
                    threshold: 1,
                    total: 3,
                },
            ),
            (
                0,
                3,
                1,
                ShareFormatError::Split {
                    threshold: 0,
                    total: 3,
                },
            ),
            (
                4,
                3,
                1,
                ShareFormatError::Split {
                    threshold: 4,
                    total: 3,
                },
            ),
            (
                2,
                17,
                1,
                ShareFormatError::Split {
                    threshold: 2,
                    total: 17,
                },
            ),
            (
                2,
                255,
                1,
                ShareFormatError::Split {
                    threshold: 2,
                    total: 255,
                },
            ),
            (2, 3, 0, ShareFormatError::Index { index: 0, total: 3 }),
            (2, 3, 4, ShareFormatError::Index { index: 4, total: 3 }),
        ] {
            assert_eq!(format_error(&forged(k, n, i)), want, "{k}/{n} #{i}");
        }
        let ok: UnlockShare = forged(16, 16, 16).parse().unwrap();
        assert_eq!((ok.threshold(), ok.total(), ok.index()), (16, 16, 16));
    }

    /// Guards "no Display of secrets": Debug of a share, a set and the
    /// errors never shows share bytes.
    #[test]
    fn debug_and_errors_do_not_show_the_share() {
        let shares = split(&key(), 2, 3);
        let text = shares[0].expose_for_operator();
        let field = &text[SHARE_FIELD];
        let debug = format!("{:?}", shares[0]);
        assert!(!debug.contains(text.as_str()));
        assert!(!debug.contains(field));
        assert!(!debug.contains(&field[..8]));
        assert!(debug.contains('…'), "{debug}");
        assert!(debug.contains("index: 1"), "{debug}");

        let mut set = ShareSet::new();
        set.add(retyped(&shares[0])).unwrap();
        let debug = format!("{set:?}");
        assert!(!debug.contains(&field[..8]), "{debug}");
        assert!(debug.contains("given: [1]"), "{debug}");

        for bad in [
            with_char(&text, 40, '!'),
            with_char(&text, 40, if &text[40..41] == "0" { '1' } else { '0' }),
            text[..60].to_string(),
            text.replacen("MOATSHARE-1-", "MOATSHARE-", 1),
        ] {
            let message = bad.parse::<UnlockShare>().unwrap_err().to_string();
            assert!(!message.contains(&field[..8]), "{message}");
        }
    }

    /// Guards the no-reallocation promise: a growing Vec would leave copies
    /// of share bytes in freed memory.
    #[test]
    fn share_set_never_reallocates() {
        let mut set = ShareSet::new();
        let before = (set.shares.as_ptr(), set.shares.capacity());
        for share in split(&key(), 16, 16) {
            set.add(share).unwrap();
        }
        assert_eq!((set.shares.as_ptr(), set.shares.capacity()), before);
        assert_eq!(set.combine().unwrap(), key());
    }

    #[test]
    fn failing_randomness_is_remembered() {
        let mut rng = OsRandom { failed: true };
        let mut out = [1u8; 8];
        rand_core_0_10::TryRng::try_fill_bytes(&mut rng, &mut out).unwrap();
        assert_eq!(out, [0; 8]);
        assert!(rng.failed);
        let mut fine = OsRandom::default();
        let a = rand_core_0_10::TryRng::try_next_u64(&mut fine).unwrap();
        let b = rand_core_0_10::TryRng::try_next_u64(&mut fine).unwrap();
        assert_ne!(a, b);
        assert!(!fine.failed);
    }

    /// Guards the flow a locked node runs: shares handed out when autolock
    /// was enabled rebuild the key that opens the sealed DEK.
    #[test]
    fn combined_key_unseals() {
        let aad = Aad::new("dek", "c0ffee", "node-a");
        let key = UnlockKey::generate().unwrap();
        let blob = seal(KeySource::Key(&key), 1, &aad, b"the DEK").unwrap();
        let texts: Vec<Zeroizing<String>> = split(&key, 2, 3)
            .iter()
            .map(UnlockShare::expose_for_operator)
            .collect();
        drop(key);

        let mut set = ShareSet::new();
        set.add(texts[2].parse().unwrap()).unwrap();
        set.add(texts[0].parse().unwrap()).unwrap();
        let key = set.combine().unwrap();
        set.clear();
        let opened = unseal(KeySource::Key(&key), &aad, &blob).unwrap();
        assert_eq!(opened.plaintext.as_slice(), b"the DEK");
    }

    /// (K, N, the share positions to give, in order) with K <= positions.
    fn k_of_n_subset() -> impl Strategy<Value = (u8, u8, Vec<usize>)> {
        (2u8..=16)
            .prop_flat_map(|n| (2u8..=n, Just(n)))
            .prop_flat_map(|(k, n)| {
                let all: Vec<usize> = (0..usize::from(n)).collect();
                (
                    Just(k),
                    Just(n),
                    proptest::sample::subsequence(all, usize::from(k)..=usize::from(n))
                        .prop_shuffle(),
                )
            })
    }

    /// (K, N, fewer than K share positions).
    fn fewer_than_k() -> impl Strategy<Value = (u8, u8, Vec<usize>)> {
        (2u8..=16)
            .prop_flat_map(|n| (2u8..=n, Just(n)))
            .prop_flat_map(|(k, n)| {
                let all: Vec<usize> = (0..usize::from(n)).collect();
                (
                    Just(k),
                    Just(n),
                    proptest::sample::subsequence(all, 1..usize::from(k)),
                )
            })
    }

    proptest! {
        #[test]
        fn any_k_of_n_rebuild_the_key(
            (k, n, picks) in k_of_n_subset(),
            bytes in proptest::array::uniform32(any::<u8>()),
        ) {
            let key = UnlockKey::from_bytes(bytes);
            let shares = split(&key, k, n);
            let mut set = ShareSet::new();
            for &p in &picks {
                set.add(retyped(&shares[p])).unwrap();
            }
            prop_assert_eq!(set.combine().unwrap(), key);
        }

        #[test]
        fn fewer_than_k_do_not_combine((k, n, picks) in fewer_than_k()) {
            let shares = split(&key(), k, n);
            let mut set = ShareSet::new();
            for &p in &picks {
                set.add(retyped(&shares[p])).unwrap();
            }
            let err = set.combine().unwrap_err();
            prop_assert_eq!(
                err.to_string(),
                format!("need {k} of {n} shares, have {}", picks.len())
            );
        }

        #[test]
        fn from_str_never_panics(s in "\\PC{0,120}") {
            let _ = UnlockShare::from_str(&s);
        }

        #[test]
        fn any_single_character_change_is_refused(idx in 0usize..90, c in any::<char>()) {
            let text = forged(3, 5, 2);
            prop_assume!(text.chars().nth(idx) != Some(c));
            prop_assert!(UnlockShare::from_str(&with_char(&text, idx, c)).is_err());
        }
    }
}
