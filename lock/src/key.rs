//! Key-encryption keys: the unlock key, passphrases and argon2id parameters.

use std::fmt;
use std::str::FromStr;

use moat_codec::Armor;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{KeyFormatError, KeyKind, LockError};

/// Length of every key-encryption key, unlock key and DEK, in bytes.
pub const KEY_LEN: usize = 32;

/// The text form of an unlock key: `MOATKEY-1-<52 base32 chars>-<8 char check>`.
const UNLOCK_KEY_ARMOR: Armor = Armor {
    prefix: "MOATKEY",
    version: 1,
    fields: &[KEY_LEN],
};

/// The autolock key-encryption key: 32 bytes from the operating system's
/// CSPRNG.
///
/// Its text form (`MOATKEY-1-…`) is produced only by
/// [`expose_for_operator`](Self::expose_for_operator) and read with
/// [`FromStr`]. It has no `Display`, and its `Debug` prints `UnlockKey(…)`.
/// The bytes are zeroized on drop; equality is constant-time.
pub struct UnlockKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl UnlockKey {
    /// Length of the text form in characters (71).
    pub const TEXT_LEN: usize = UNLOCK_KEY_ARMOR.text_len();

    /// A new random unlock key.
    pub fn generate() -> Result<Self, LockError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(bytes.as_mut())?;
        Ok(UnlockKey { bytes })
    }

    /// The text form, for showing to the operator once (e.g. when autolock is
    /// enabled or the key is rotated). This is the only way to get the key
    /// out of this type; grep for it in review.
    pub fn expose_for_operator(&self) -> Zeroizing<String> {
        UNLOCK_KEY_ARMOR.encode(&[self.bytes.as_slice()])
    }

    pub(crate) fn secret(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// Wraps key bytes recovered inside this crate (e.g. by combining
    /// Shamir shares).
    pub(crate) fn from_secret(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        UnlockKey { bytes }
    }

    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        UnlockKey {
            bytes: Zeroizing::new(bytes),
        }
    }
}

impl FromStr for UnlockKey {
    type Err = LockError;

    /// Parses `MOATKEY-1-…`; surrounding whitespace is ignored. Each mistake
    /// (prefix, version, length, character, checksum) has its own
    /// [`KeyFormatError`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fields = UNLOCK_KEY_ARMOR.decode(s).map_err(KeyFormatError::from)?;
        let field = fields.first().ok_or(KeyFormatError::Malformed)?;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        if field.len() != KEY_LEN {
            return Err(KeyFormatError::Malformed.into());
        }
        bytes.copy_from_slice(field);
        Ok(UnlockKey { bytes })
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(…)")
    }
}

impl ConstantTimeEq for UnlockKey {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.bytes.as_slice().ct_eq(other.bytes.as_slice())
    }
}

impl PartialEq for UnlockKey {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other).into()
    }
}

impl Eq for UnlockKey {}

/// An operator passphrase, stretched with argon2id into a key-encryption key.
///
/// Held in a zeroizing buffer; `Debug` prints `Passphrase(…)`. The text is
/// used exactly as given (no trimming or normalisation).
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps `text`; rejects an empty passphrase.
    pub fn new(text: Zeroizing<String>) -> Result<Self, LockError> {
        if text.is_empty() {
            return Err(LockError::EmptyPassphrase);
        }
        Ok(Passphrase(text))
    }

    /// The passphrase text.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

/// Argon2id cost parameters, always within the bounds below.
///
/// Values are validated by [`KdfParams::new`]; parameters read from a sealed
/// blob are checked against the maxima before the KDF runs
/// ([`LockError::ExcessiveWork`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
}

impl KdfParams {
    /// Smallest memory cost: 8 MiB.
    pub const MIN_M_COST_KIB: u32 = 8 * 1024;
    /// Largest memory cost: 1 GiB.
    pub const MAX_M_COST_KIB: u32 = 1_048_576;
    /// Default memory cost: 64 MiB.
    pub const DEFAULT_M_COST_KIB: u32 = 64 * 1024;
    /// Smallest number of passes.
    pub const MIN_T_COST: u32 = 1;
    /// Largest number of passes.
    pub const MAX_T_COST: u32 = 10;
    /// Default number of passes.
    pub const DEFAULT_T_COST: u32 = 3;
    /// Smallest parallelism (lanes).
    pub const MIN_P_COST: u32 = 1;
    /// Largest parallelism (lanes).
    pub const MAX_P_COST: u32 = 8;
    /// Default parallelism.
    pub const DEFAULT_P_COST: u32 = 1;

    /// Validated parameters: each value must lie in its `MIN..=MAX` range.
    pub fn new(m_cost_kib: u32, t_cost: u32, p_cost: u32) -> Result<Self, LockError> {
        check_range(
            "m_cost_kib",
            m_cost_kib,
            Self::MIN_M_COST_KIB,
            Self::MAX_M_COST_KIB,
        )?;
        check_range("t_cost", t_cost, Self::MIN_T_COST, Self::MAX_T_COST)?;
        check_range("p_cost", p_cost, Self::MIN_P_COST, Self::MAX_P_COST)?;
        Ok(KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        })
    }

    /// The cheapest allowed parameters (8 MiB, t = 1, p = 1). For tests and
    /// for machines where the default is too slow; not a production default.
    pub const fn minimum() -> Self {
        KdfParams {
            m_cost_kib: Self::MIN_M_COST_KIB,
            t_cost: Self::MIN_T_COST,
            p_cost: Self::MIN_P_COST,
        }
    }

    /// Memory cost in KiB.
    pub const fn m_cost_kib(&self) -> u32 {
        self.m_cost_kib
    }

    /// Number of passes.
    pub const fn t_cost(&self) -> u32 {
        self.t_cost
    }

    /// Parallelism (lanes).
    pub const fn p_cost(&self) -> u32 {
        self.p_cost
    }

    /// Parameters read from a blob header: above any maximum is
    /// [`LockError::ExcessiveWork`], below any minimum is an invalid header.
    pub(crate) fn from_stored(
        m_cost_kib: u32,
        t_cost: u32,
        p_cost: u32,
    ) -> Result<Self, LockError> {
        if m_cost_kib > Self::MAX_M_COST_KIB
            || t_cost > Self::MAX_T_COST
            || p_cost > Self::MAX_P_COST
        {
            return Err(LockError::ExcessiveWork {
                m_cost_kib,
                t_cost,
                p_cost,
            });
        }
        if m_cost_kib < Self::MIN_M_COST_KIB
            || t_cost < Self::MIN_T_COST
            || p_cost < Self::MIN_P_COST
        {
            return Err(LockError::InvalidHeader {
                reason: "argon2id parameters below the minimum",
            });
        }
        Ok(KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        })
    }

    /// Runs argon2id over `passphrase` and `salt` into a 256-bit key.
    pub(crate) fn derive(
        &self,
        passphrase: &Passphrase,
        salt: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, LockError> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(KEY_LEN))
            .map_err(|_| LockError::Crypto {
                what: "argon2id parameters",
            })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase.expose_secret().as_bytes(), salt, out.as_mut())
            .map_err(|_| LockError::Crypto { what: "argon2id" })?;
        Ok(out)
    }
}

impl Default for KdfParams {
    /// 64 MiB, t = 3, p = 1.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: Self::DEFAULT_M_COST_KIB,
            t_cost: Self::DEFAULT_T_COST,
            p_cost: Self::DEFAULT_P_COST,
        }
    }
}

/// The key-encryption key used to seal or unseal a blob.
#[derive(Debug, Clone, Copy)]
pub enum KeySource<'a> {
    /// An autolock unlock key, used as the KEK directly.
    Key(&'a UnlockKey),
    /// A passphrase stretched with argon2id. The parameters are used when
    /// sealing; when unsealing, the blob header's parameters are used and
    /// these are ignored.
    Passphrase(&'a Passphrase, KdfParams),
}

impl KeySource<'_> {
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            KeySource::Key(_) => KeyKind::UnlockKey,
            KeySource::Passphrase(..) => KeyKind::Passphrase,
        }
    }
}

/// Fills `out` from the operating system's CSPRNG.
pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), LockError> {
    use rand_core::RngCore as _;
    rand_core::OsRng
        .try_fill_bytes(out)
        .map_err(|_| LockError::Random)
}

fn check_range(param: &'static str, value: u32, min: u32, max: u32) -> Result<(), LockError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LockError::KdfParamsOutOfRange {
            param,
            value,
            min,
            max,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_text() -> String {
        UnlockKey::from_bytes([0x5a; KEY_LEN])
            .expose_for_operator()
            .to_string()
    }

    fn format_error(text: &str) -> KeyFormatError {
        match UnlockKey::from_str(text) {
            Err(LockError::KeyFormat(e)) => e,
            other => panic!("expected a key format error, got {other:?}"),
        }
    }

    #[test]
    fn text_form_shape() {
        let key = UnlockKey::generate().unwrap();
        let text = key.expose_for_operator();
        assert_eq!(text.len(), UnlockKey::TEXT_LEN);
        assert_eq!(UnlockKey::TEXT_LEN, 7 + 1 + 1 + 1 + 52 + 1 + 8);
        let parts: Vec<&str> = text.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "MOATKEY");
        assert_eq!(parts[1], "1");
        assert_eq!(parts[2].len(), 52);
        assert_eq!(parts[3].len(), 8);
    }

    #[test]
    fn generate_round_trips_and_is_random() {
        let a = UnlockKey::generate().unwrap();
        let b = UnlockKey::generate().unwrap();
        assert_ne!(a, b, "two generated keys must differ");
        let parsed: UnlockKey = a.expose_for_operator().parse().unwrap();
        assert_eq!(parsed, a);
        assert_eq!(parsed.secret(), a.secret());
        // Whitespace around a pasted key is ignored.
        let padded = format!("  {}\n", a.expose_for_operator().as_str());
        assert_eq!(padded.parse::<UnlockKey>().unwrap(), a);
    }

    #[test]
    fn distinct_format_errors() {
        let good = sample_text();
        assert_eq!(
            format_error(&good.replacen("MOATKEY", "MOATTKN", 1)),
            KeyFormatError::Prefix
        );
        assert_eq!(format_error(""), KeyFormatError::Prefix);
        assert_eq!(
            format_error(&good.replacen("MOATKEY-1", "MOATKEY-2", 1)),
            KeyFormatError::Version {
                found: Some(2),
                supported: 1
            }
        );
        assert_eq!(
            format_error(&good[..good.len() - 1]),
            KeyFormatError::Length {
                expected: UnlockKey::TEXT_LEN,
                found: UnlockKey::TEXT_LEN - 1
            }
        );
        let mut bad_char = good.clone().into_bytes();
        bad_char[12] = b'z';
        assert_eq!(
            format_error(std::str::from_utf8(&bad_char).unwrap()),
            KeyFormatError::Character { position: 12 }
        );
        let mut typo = good.clone().into_bytes();
        typo[12] = if typo[12] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            format_error(std::str::from_utf8(&typo).unwrap()),
            KeyFormatError::Checksum
        );
    }

    #[test]
    fn no_secret_in_debug_or_errors() {
        let key = UnlockKey::from_bytes([0x5a; KEY_LEN]);
        let text = key.expose_for_operator();
        let body = text.split('-').nth(2).unwrap().to_string();
        let debug = format!("{key:?} {:?}", KeySource::Key(&key));
        assert!(!debug.contains(&body), "Debug leaks the key: {debug}");
        assert!(debug.contains("UnlockKey(…)"));
        // A checksum error must not echo the key text.
        let mut typo = text.to_string().into_bytes();
        typo[12] = if typo[12] == b'0' { b'1' } else { b'0' };
        let err = UnlockKey::from_str(std::str::from_utf8(&typo).unwrap()).unwrap_err();
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains(&body[4..20]), "error leaks the key: {msg}");

        // Version left out: the key body sits where the version should be and
        // must not be echoed.
        let err = UnlockKey::from_str(&text.replacen("MOATKEY-1-", "MOATKEY-", 1)).unwrap_err();
        assert!(matches!(
            err,
            LockError::KeyFormat(KeyFormatError::Version { found: None, .. })
        ));
        let msg = format!("{err} {err:?}");
        assert!(!msg.contains(&body[..3]), "error leaks the key: {msg}");

        let pass = Passphrase::new(Zeroizing::new("correct horse".into())).unwrap();
        let debug = format!(
            "{pass:?} {:?}",
            KeySource::Passphrase(&pass, KdfParams::minimum())
        );
        assert!(
            !debug.contains("horse"),
            "Debug leaks the passphrase: {debug}"
        );
    }

    #[test]
    fn empty_passphrase_is_rejected() {
        assert!(matches!(
            Passphrase::new(Zeroizing::new(String::new())),
            Err(LockError::EmptyPassphrase)
        ));
        assert_eq!(
            Passphrase::new(Zeroizing::new(" ".into()))
                .unwrap()
                .expose_secret(),
            " "
        );
    }

    #[test]
    fn kdf_defaults_and_bounds() {
        let d = KdfParams::default();
        assert_eq!((d.m_cost_kib(), d.t_cost(), d.p_cost()), (65_536, 3, 1));
        assert_eq!(KdfParams::MAX_M_COST_KIB, 1024 * 1024);
        assert_eq!(KdfParams::new(65_536, 3, 1).unwrap(), d);
        let min = KdfParams::minimum();
        assert_eq!(KdfParams::new(8192, 1, 1).unwrap(), min);
        KdfParams::new(KdfParams::MAX_M_COST_KIB, 10, 8).unwrap();
        for (m, t, p, which) in [
            (8191, 1, 1, "m_cost_kib"),
            (1_048_577, 1, 1, "m_cost_kib"),
            (8192, 0, 1, "t_cost"),
            (8192, 11, 1, "t_cost"),
            (8192, 1, 0, "p_cost"),
            (8192, 1, 9, "p_cost"),
        ] {
            match KdfParams::new(m, t, p) {
                Err(LockError::KdfParamsOutOfRange { param, .. }) => assert_eq!(param, which),
                other => panic!("({m}, {t}, {p}) should be out of range, got {other:?}"),
            }
        }
    }

    #[test]
    fn stored_params_are_bounded() {
        assert!(matches!(
            KdfParams::from_stored(4 * 1024 * 1024, 1, 1),
            Err(LockError::ExcessiveWork {
                m_cost_kib: 4_194_304,
                ..
            })
        ));
        assert!(matches!(
            KdfParams::from_stored(8192, 11, 1),
            Err(LockError::ExcessiveWork { .. })
        ));
        assert!(matches!(
            KdfParams::from_stored(8192, 1, 9),
            Err(LockError::ExcessiveWork { .. })
        ));
        assert!(matches!(
            KdfParams::from_stored(8, 1, 1),
            Err(LockError::InvalidHeader { .. })
        ));
        assert_eq!(
            KdfParams::from_stored(8192, 1, 1).unwrap(),
            KdfParams::minimum()
        );
    }

    #[test]
    fn argon2id_depends_on_passphrase_salt_and_params() {
        let a = Passphrase::new(Zeroizing::new("one".into())).unwrap();
        let b = Passphrase::new(Zeroizing::new("two".into())).unwrap();
        let min = KdfParams::minimum();
        let salt = [1u8; 32];
        let k1 = min.derive(&a, &salt).unwrap();
        assert_eq!(*k1, *min.derive(&a, &salt).unwrap(), "deterministic");
        assert_ne!(*k1, *min.derive(&b, &salt).unwrap());
        assert_ne!(*k1, *min.derive(&a, &[2u8; 32]).unwrap());
        let t2 = KdfParams::new(8192, 2, 1).unwrap();
        assert_ne!(*k1, *t2.derive(&a, &salt).unwrap());
    }

    proptest! {
        #[test]
        fn text_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let key = UnlockKey::from_bytes(bytes);
            let back: UnlockKey = key.expose_for_operator().parse().unwrap();
            prop_assert_eq!(back.secret(), &bytes);
        }

        #[test]
        fn from_str_never_panics(s in "\\PC{0,100}") {
            let _ = UnlockKey::from_str(&s);
        }

        #[test]
        fn near_miss_text_never_panics(idx in 0usize..71, c in any::<char>()) {
            let mut chars: Vec<char> = sample_text().chars().collect();
            chars[idx] = c;
            let text: String = chars.into_iter().collect();
            let result = UnlockKey::from_str(&text);
            if c != sample_text().chars().nth(idx).unwrap() {
                prop_assert!(result.is_err());
            }
        }
    }
}
