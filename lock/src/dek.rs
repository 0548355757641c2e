//! Data-encryption keys: wrapping under a KEK, rotation, and record
//! encryption for the replicated store.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroizing;

use crate::error::LockError;
use crate::key::{KEY_LEN, KeySource, fill_random};
use crate::seal::{Aad, TAG_LEN, seal, unseal};

/// How many records one DEK value may seal, over its whole life, before
/// [`Dek::seal_record`] refuses: 2^30. Random 96-bit nonces stay far below
/// the 2^32 NIST bound for AES-GCM at this count.
///
/// The counter lives in the [`Dek`] value; a caller that keeps a DEK
/// across processes carries it over with [`Dek::resume_leased`] and a
/// durable lease (the store does, see `docs/store.md`).
pub const MAX_RECORDS_PER_DEK: u64 = 1 << 30;

/// The count at which a DEK should be rotated: 3/4 of
/// [`MAX_RECORDS_PER_DEK`] (see [`Dek::rotation_advised`]), so that a
/// rotation that fails a few times still has 2^28 records of room before
/// sealing refuses.
pub const DEK_ROTATE_AT: u64 = MAX_RECORDS_PER_DEK / 4 * 3;

const VERSION_LEN: usize = 4;
const NONCE_LEN: usize = 12;
/// Bytes a record adds to its plaintext: version (4), nonce (12), tag (16).
pub const RECORD_OVERHEAD: usize = VERSION_LEN + NONCE_LEN + TAG_LEN;

/// The version of a DEK. Stored as the key id of its wrapped blob and as the
/// first four bytes of every record it encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DekVersion(pub u32);

impl fmt::Display for DekVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A 256-bit AES-256-GCM data-encryption key with its version.
///
/// The key bytes are zeroized on drop and never printed (`Debug` shows only
/// the version). `Dek` is deliberately not `Clone`: the nonce-use counter
/// lives in the value, and a copy would double the budget.
pub struct Dek {
    version: DekVersion,
    key: Zeroizing<[u8; KEY_LEN]>,
    /// The expanded AES-256-GCM key, built once (the `aes` crate's
    /// `zeroize` feature wipes the round keys on drop).
    aead: Aes256Gcm,
    /// Records counted as sealed by this value: in this process, plus
    /// what [`Dek::resume_leased`] carried over from earlier ones.
    uses: AtomicU64,
    /// How many records may be counted before the caller must extend the
    /// lease ([`Dek::extend_lease`]); [`MAX_RECORDS_PER_DEK`] for a value
    /// that keeps no lease. Only grows, except in
    /// [`resume_leased`](Dek::resume_leased).
    lease_end: AtomicU64,
}

impl Dek {
    /// A new random DEK with the given version.
    pub fn generate(version: DekVersion) -> Result<Dek, LockError> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(key.as_mut())?;
        Ok(Dek::from_key(version, key))
    }

    /// This DEK's version.
    pub fn version(&self) -> DekVersion {
        self.version
    }

    /// Seals this DEK under `kek` for the context `aad` (by convention
    /// `purpose` is `"dek"`). The blob's key id is the DEK version.
    pub fn wrap(&self, kek: KeySource<'_>, aad: &Aad<'_>) -> Result<Vec<u8>, LockError> {
        seal(kek, self.version.0, aad, self.key.as_slice())
    }

    /// Opens a blob written by [`Dek::wrap`]; the version comes from the
    /// blob's key id. Errors are those of [`unseal`](crate::unseal), plus
    /// [`LockError::NotADek`] if the payload is not 32 bytes.
    pub fn unwrap(kek: KeySource<'_>, aad: &Aad<'_>, blob: &[u8]) -> Result<Dek, LockError> {
        let opened = unseal(kek, aad, blob)?;
        let bytes: &[u8; KEY_LEN] =
            opened
                .plaintext
                .as_slice()
                .try_into()
                .map_err(|_| LockError::NotADek {
                    len: opened.plaintext.len(),
                })?;
        Ok(Dek::from_key(
            DekVersion(opened.key_id),
            Zeroizing::new(*bytes),
        ))
    }

    /// Encrypts one record: `[version u32 BE][nonce 12][ciphertext + tag 16]`.
    ///
    /// The AEAD associated data is the 4 version bytes followed by `aad`
    /// (e.g. the log index and term); pass the same `aad` to
    /// [`DekSet::open_record`]. Nonces are random. After
    /// [`MAX_RECORDS_PER_DEK`] records this value refuses with
    /// [`LockError::DekUsageLimit`]: rotate the DEK. A leased value (see
    /// [`resume_leased`](Self::resume_leased)) refuses with
    /// [`LockError::DekLeaseEnded`] at the end of its lease, before
    /// sealing anything: make a longer lease durable, call
    /// [`extend_lease`](Self::extend_lease) and seal again.
    pub fn seal_record(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, LockError> {
        self.uses
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                let allowed = self
                    .lease_end
                    .load(Ordering::Acquire)
                    .min(MAX_RECORDS_PER_DEK);
                (n < allowed).then_some(n + 1)
            })
            .map_err(|n| {
                if n >= MAX_RECORDS_PER_DEK {
                    LockError::DekUsageLimit {
                        version: self.version,
                        limit: MAX_RECORDS_PER_DEK,
                    }
                } else {
                    LockError::DekLeaseEnded {
                        version: self.version,
                        sealed: n,
                    }
                }
            })?;
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        let version = self.version.0.to_be_bytes();
        let record_aad = record_aad(version, aad);

        let mut record = Vec::with_capacity(RECORD_OVERHEAD + plaintext.len());
        record.extend_from_slice(&version);
        record.extend_from_slice(&nonce);
        record.extend_from_slice(plaintext);
        let body = record
            .get_mut(VERSION_LEN + NONCE_LEN..)
            .ok_or(LockError::Crypto {
                what: "record layout",
            })?;
        let tag = self
            .cipher()?
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &record_aad, body)
            .map_err(|_| LockError::Crypto {
                what: "AES-256-GCM record seal",
            })?;
        record.extend_from_slice(&tag);
        Ok(record)
    }

    /// Records counted as sealed by this value: in this process, plus the
    /// count [`resume_leased`](Self::resume_leased) carried over.
    pub fn records_sealed(&self) -> u64 {
        self.uses.load(Ordering::Acquire)
    }

    /// Carries this value's record count over from earlier processes and
    /// puts it on a lease: `sealed` (the durable lease end they left,
    /// every leased record counted as used) is added to the count (which
    /// never goes down), and from now on [`seal_record`](Self::seal_record)
    /// refuses with [`LockError::DekLeaseEnded`] rather than seal past the
    /// lease the caller grants with [`extend_lease`](Self::extend_lease).
    /// The caller makes each lease end durable before granting it, so a
    /// crash loses at most the unused rest of one lease and never lets the
    /// count restart lower.
    pub fn resume_leased(&self, sealed: u64) {
        let now = self.uses.fetch_max(sealed, Ordering::AcqRel).max(sealed);
        self.lease_end.store(now, Ordering::Release);
    }

    /// Lets this value seal records up to `end` in all (capped at
    /// [`MAX_RECORDS_PER_DEK`]); a lower `end` than the current lease does
    /// nothing. Call it only once `end` is durable.
    pub fn extend_lease(&self, end: u64) {
        self.lease_end
            .fetch_max(end.min(MAX_RECORDS_PER_DEK), Ordering::AcqRel);
    }

    /// The count up to which this value may seal without a new lease.
    pub fn lease_end(&self) -> u64 {
        self.lease_end.load(Ordering::Acquire)
    }

    /// Whether this value has sealed [`DEK_ROTATE_AT`] records or more:
    /// time to rotate it, well before [`MAX_RECORDS_PER_DEK`] refuses.
    pub fn rotation_advised(&self) -> bool {
        self.records_sealed() >= DEK_ROTATE_AT
    }

    fn from_key(version: DekVersion, key: Zeroizing<[u8; KEY_LEN]>) -> Dek {
        let aead = Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(key.as_slice()));
        Dek {
            version,
            key,
            aead,
            uses: AtomicU64::new(0),
            lease_end: AtomicU64::new(MAX_RECORDS_PER_DEK),
        }
    }

    fn cipher(&self) -> Result<&Aes256Gcm, LockError> {
        Ok(&self.aead)
    }

    fn open_record(
        &self,
        aad: &[u8],
        nonce: &[u8; NONCE_LEN],
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, LockError> {
        let tampered = LockError::RecordTampered {
            version: self.version,
        };
        let (ciphertext, tag) = body
            .split_at_checked(body.len().saturating_sub(TAG_LEN))
            .ok_or(LockError::Crypto {
                what: "record layout",
            })?;
        if tag.len() != TAG_LEN {
            return Err(tampered);
        }
        let record_aad = record_aad(self.version.0.to_be_bytes(), aad);
        let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        plaintext.extend_from_slice(ciphertext);
        self.cipher()?
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                &record_aad,
                plaintext.as_mut_slice(),
                Tag::from_slice(tag),
            )
            .map_err(|_| tampered)?;
        Ok(plaintext)
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dek")
            .field("version", &self.version)
            .field("key", &format_args!("…"))
            .finish()
    }
}

/// The DEKs a node holds: the current one and, during a rotation, the next.
///
/// Rotation: [`begin_rotation`](Self::begin_rotation) creates the pending
/// DEK (version current + 1); the caller wraps and replicates it, seals new
/// records with it and re-encrypts old ones; then
/// [`complete_rotation`](Self::complete_rotation) makes it current and hands
/// back the retired DEK. Records are opened with whichever DEK their version
/// names.
#[derive(Debug)]
pub struct DekSet {
    current: Dek,
    pending: Option<Dek>,
}

impl DekSet {
    /// A set with `current` and no rotation in progress.
    pub fn new(current: Dek) -> DekSet {
        DekSet {
            current,
            pending: None,
        }
    }

    /// A set in the middle of a rotation (e.g. reloaded after a restart).
    /// `pending` must have version `current + 1`.
    pub fn with_pending(current: Dek, pending: Dek) -> Result<DekSet, LockError> {
        if current.version.0.checked_add(1) != Some(pending.version.0) {
            return Err(LockError::PendingVersionMismatch {
                current: current.version,
                pending: pending.version,
            });
        }
        Ok(DekSet {
            current,
            pending: Some(pending),
        })
    }

    /// The current DEK.
    pub fn current(&self) -> &Dek {
        &self.current
    }

    /// The pending DEK, during a rotation.
    pub fn pending(&self) -> Option<&Dek> {
        self.pending.as_ref()
    }

    /// Starts a rotation: generates the pending DEK with version current + 1
    /// and returns it (wrap it and replicate it before using it).
    pub fn begin_rotation(&mut self) -> Result<&Dek, LockError> {
        if let Some(p) = &self.pending {
            return Err(LockError::RotationInProgress { pending: p.version });
        }
        let next = self
            .current
            .version
            .0
            .checked_add(1)
            .ok_or(LockError::DekVersionExhausted {
                current: self.current.version,
            })?;
        Ok(self.pending.insert(Dek::generate(DekVersion(next))?))
    }

    /// Abandons a rotation that could not be made durable: the pending DEK
    /// is dropped (zeroized) before anything was sealed with it.
    pub fn abandon_rotation(&mut self) -> Option<DekVersion> {
        self.pending.take().map(|p| p.version)
    }

    /// Finishes a rotation: the pending DEK becomes current. Returns the
    /// retired DEK, which the caller keeps only as long as records sealed
    /// with it remain.
    pub fn complete_rotation(&mut self) -> Result<Dek, LockError> {
        let pending = self.pending.take().ok_or(LockError::NoRotationPending)?;
        Ok(std::mem::replace(&mut self.current, pending))
    }

    /// The DEK with `version`, if this set holds it.
    pub fn key_for(&self, version: DekVersion) -> Option<&Dek> {
        std::iter::once(&self.current)
            .chain(self.pending.as_ref())
            .find(|d| d.version == version)
    }

    /// Decrypts a record written by [`Dek::seal_record`] with any DEK in
    /// this set, with the same `aad`.
    pub fn open_record(&self, aad: &[u8], record: &[u8]) -> Result<Zeroizing<Vec<u8>>, LockError> {
        let truncated = LockError::RecordTruncated {
            len: record.len(),
            min: RECORD_OVERHEAD,
        };
        if record.len() < RECORD_OVERHEAD {
            return Err(truncated);
        }
        let (version, rest) = record.split_first_chunk::<VERSION_LEN>().ok_or(truncated)?;
        let version = DekVersion(u32::from_be_bytes(*version));
        let (nonce, body) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(LockError::RecordTampered { version })?;
        let dek = self
            .key_for(version)
            .ok_or(LockError::UnknownDekVersion { version })?;
        dek.open_record(aad, nonce, body)
    }
}

/// The DEK version a record written by [`Dek::seal_record`] names, read
/// from its first four bytes without decrypting it (`None` if shorter).
/// Used to find records still sealed with a DEK that is being retired.
pub fn record_version(record: &[u8]) -> Option<DekVersion> {
    record
        .first_chunk::<VERSION_LEN>()
        .map(|v| DekVersion(u32::from_be_bytes(*v)))
}

fn record_aad(version: [u8; VERSION_LEN], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_LEN + aad.len());
    out.extend_from_slice(&version);
    out.extend_from_slice(aad);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::key::{KdfParams, UnlockKey};
    use crate::seal::tests::{AAD, passphrase};
    use proptest::prelude::*;

    const DEK_AAD: Aad<'static> = Aad::new("dek", "cluster-a", "node-1");

    fn dek(version: u32) -> Dek {
        Dek::generate(DekVersion(version)).unwrap()
    }

    #[test]
    fn wrap_round_trips_with_key_and_passphrase() {
        let d = dek(3);
        let key = UnlockKey::generate().unwrap();
        let blob = d.wrap(KeySource::Key(&key), &DEK_AAD).unwrap();
        assert_eq!(
            &blob[11..15],
            &3u32.to_be_bytes(),
            "key id is the DEK version"
        );
        let back = Dek::unwrap(KeySource::Key(&key), &DEK_AAD, &blob).unwrap();
        assert_eq!(back.version(), DekVersion(3));
        assert_eq!(*back.key, *d.key);

        let pass = passphrase("pw");
        let blob = d
            .wrap(KeySource::Passphrase(&pass, KdfParams::minimum()), &DEK_AAD)
            .unwrap();
        let back = Dek::unwrap(
            KeySource::Passphrase(&pass, KdfParams::minimum()),
            &DEK_AAD,
            &blob,
        )
        .unwrap();
        assert_eq!(*back.key, *d.key);
        assert!(
            !blob.windows(KEY_LEN).any(|w| w == d.key.as_slice()),
            "DEK in the clear"
        );
    }

    #[test]
    fn unwrap_errors() {
        let d = dek(1);
        let key = UnlockKey::generate().unwrap();
        let blob = d.wrap(KeySource::Key(&key), &DEK_AAD).unwrap();
        let other = UnlockKey::generate().unwrap();
        assert!(matches!(
            Dek::unwrap(KeySource::Key(&other), &DEK_AAD, &blob),
            Err(LockError::WrongKey)
        ));
        assert!(matches!(
            Dek::unwrap(KeySource::Key(&key), &AAD, &blob),
            Err(LockError::Tampered)
        ));
        let not_a_dek = seal(KeySource::Key(&key), 1, &DEK_AAD, b"sixteen bytes!!!").unwrap();
        assert!(matches!(
            Dek::unwrap(KeySource::Key(&key), &DEK_AAD, &not_a_dek),
            Err(LockError::NotADek { len: 16 })
        ));
    }

    #[test]
    fn debug_hides_key_bytes() {
        let d = dek(5);
        let debug = format!("{d:?} {:?}", DekSet::new(dek(6)));
        assert!(debug.contains("version: DekVersion(5)"));
        let hex: String = d
            .key
            .iter()
            .map(|b| format!("{b}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(!debug.contains(&hex), "Debug leaks the key");
    }

    #[test]
    fn records_round_trip_and_bind_aad() {
        let set = DekSet::new(dek(1));
        let record = set.current().seal_record(b"index=5", b"payload").unwrap();
        assert_eq!(record.len(), RECORD_OVERHEAD + 7);
        assert_eq!(&record[..4], &1u32.to_be_bytes());
        assert_eq!(
            set.open_record(b"index=5", &record).unwrap().as_slice(),
            b"payload"
        );
        assert!(matches!(
            set.open_record(b"index=6", &record),
            Err(LockError::RecordTampered {
                version: DekVersion(1)
            })
        ));
        let again = set.current().seal_record(b"index=5", b"payload").unwrap();
        assert_ne!(record[4..16], again[4..16], "nonces must be random");
        assert_eq!(set.current().records_sealed(), 2);
        let empty = set.current().seal_record(b"", b"").unwrap();
        assert!(set.open_record(b"", &empty).unwrap().is_empty());
    }

    #[test]
    fn every_record_byte_flip_is_detected() {
        let set = DekSet::new(dek(1));
        let record = set.current().seal_record(b"aad", b"some record").unwrap();
        for pos in 0..record.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = record.clone();
                bad[pos] ^= mask;
                match set.open_record(b"aad", &bad) {
                    Ok(_) => panic!("flip at {pos} accepted"),
                    Err(LockError::UnknownDekVersion { .. }) => assert!(pos < 4),
                    Err(LockError::RecordTampered { .. }) => assert!(pos >= 4),
                    Err(e) => panic!("flip at {pos}: {e:?}"),
                }
            }
        }
        for len in 0..RECORD_OVERHEAD {
            assert!(matches!(
                set.open_record(b"aad", &record[..len]),
                Err(LockError::RecordTruncated { .. })
            ));
        }
    }

    #[test]
    fn usage_limit_refuses_and_names_rotation() {
        let d = dek(4);
        d.uses.store(MAX_RECORDS_PER_DEK - 1, Ordering::Relaxed);
        d.seal_record(b"", b"last one").unwrap();
        match d.seal_record(b"", b"one too many") {
            Err(e @ LockError::DekUsageLimit { .. }) => assert!(e.to_string().contains("rotate")),
            other => panic!("expected DekUsageLimit, got {other:?}"),
        }
        assert_eq!(d.records_sealed(), MAX_RECORDS_PER_DEK);
    }

    /// Guards issue 16, finding 7: a DEK's count carried over from an
    /// earlier process is never lowered, and a leased DEK seals nothing
    /// past the lease its caller made durable.
    #[test]
    fn leased_dek_resumes_its_count_and_stops_at_the_lease() {
        let d = dek(2);
        d.seal_record(b"", b"before").unwrap();
        d.resume_leased(10);
        assert_eq!(d.records_sealed(), 10, "the earlier processes' count");
        assert_eq!(d.lease_end(), 10);
        match d.seal_record(b"", b"past the lease") {
            Err(e @ LockError::DekLeaseEnded { sealed: 10, .. }) => {
                assert!(e.to_string().contains("extend the lease"));
            }
            other => panic!("expected DekLeaseEnded, got {other:?}"),
        }
        assert_eq!(d.records_sealed(), 10, "a refusal counts nothing");
        d.extend_lease(12);
        d.extend_lease(11);
        assert_eq!(d.lease_end(), 12, "a lease never shrinks by extension");
        d.seal_record(b"", b"11th").unwrap();
        d.seal_record(b"", b"12th").unwrap();
        assert!(matches!(
            d.seal_record(b"", b"13th"),
            Err(LockError::DekLeaseEnded { sealed: 12, .. })
        ));
        d.resume_leased(3);
        assert_eq!(d.records_sealed(), 12, "resuming never lowers the count");
        assert!(!d.rotation_advised());

        d.resume_leased(DEK_ROTATE_AT);
        assert!(d.rotation_advised());
        d.extend_lease(u64::MAX);
        assert_eq!(d.lease_end(), MAX_RECORDS_PER_DEK, "capped at the limit");
        d.resume_leased(MAX_RECORDS_PER_DEK);
        d.extend_lease(u64::MAX);
        assert!(matches!(
            d.seal_record(b"", b"over the limit"),
            Err(LockError::DekUsageLimit { .. })
        ));
    }

    #[test]
    fn rotation_lifecycle() {
        let mut set = DekSet::new(dek(1));
        let old = set.current().seal_record(b"a", b"old").unwrap();
        assert!(matches!(
            set.complete_rotation(),
            Err(LockError::NoRotationPending)
        ));
        assert_eq!(set.begin_rotation().unwrap().version(), DekVersion(2));
        assert!(matches!(
            set.begin_rotation(),
            Err(LockError::RotationInProgress {
                pending: DekVersion(2)
            })
        ));
        assert_eq!(set.current().version(), DekVersion(1));
        let new = set.pending().unwrap().seal_record(b"a", b"new").unwrap();
        // During rotation both versions open.
        assert_eq!(set.open_record(b"a", &old).unwrap().as_slice(), b"old");
        assert_eq!(set.open_record(b"a", &new).unwrap().as_slice(), b"new");
        assert!(set.key_for(DekVersion(1)).is_some() && set.key_for(DekVersion(2)).is_some());

        let retired = set.complete_rotation().unwrap();
        assert_eq!(retired.version(), DekVersion(1));
        assert_eq!(set.current().version(), DekVersion(2));
        assert!(set.pending().is_none());
        assert!(set.key_for(DekVersion(1)).is_none());
        assert!(matches!(
            set.open_record(b"a", &old),
            Err(LockError::UnknownDekVersion {
                version: DekVersion(1)
            })
        ));
        assert_eq!(set.open_record(b"a", &new).unwrap().as_slice(), b"new");
        assert_eq!(set.begin_rotation().unwrap().version(), DekVersion(3));
    }

    #[test]
    fn version_limits() {
        let mut set = DekSet::new(dek(u32::MAX));
        assert!(matches!(
            set.begin_rotation(),
            Err(LockError::DekVersionExhausted { .. })
        ));
        assert!(matches!(
            DekSet::with_pending(dek(1), dek(3)),
            Err(LockError::PendingVersionMismatch { .. })
        ));
        let set = DekSet::with_pending(dek(1), dek(2)).unwrap();
        assert_eq!(set.pending().unwrap().version(), DekVersion(2));
    }

    proptest! {
        #[test]
        fn open_record_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let set = DekSet::new(dek(0));
            prop_assert!(set.open_record(b"", &bytes).is_err());
        }

        #[test]
        fn records_round_trip(aad in proptest::collection::vec(any::<u8>(), 0..64),
                              plaintext in proptest::collection::vec(any::<u8>(), 0..512)) {
            let set = DekSet::new(dek(9));
            let record = set.current().seal_record(&aad, &plaintext).unwrap();
            let opened = set.open_record(&aad, &record).unwrap();
            prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
    }
}
