//! The cluster audit key: an HMAC-SHA256 key under which records name
//! secrets without revealing them (Vault's audit-hash idea).

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::error::KeyError;

/// Prefix of every keyed hash: names the algorithm, so a later version can
/// change it without ambiguity.
pub const AUDIT_HASH_PREFIX: &str = "hmac-sha256:";

/// The cluster's audit key: 32 random bytes.
///
/// Records never hold a secret (a join token, an unlock key); where one
/// must be correlated they hold [`AuditKey::hash`] of it, and an
/// investigator who holds the secret asks the cluster (`moat audit hash
/// VALUE`) for the same value. Without the key, the hash reveals nothing
/// about the secret, not even a guessable one.
///
/// The bytes are zeroized on drop; `Debug` prints `AuditKey(…)`; read them
/// only through [`AuditKey::expose_secret`], to seal them into the store.
pub struct AuditKey(Zeroizing<[u8; AuditKey::BYTES]>);

impl AuditKey {
    /// Key length in bytes.
    pub const BYTES: usize = 32;

    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        Self::generate_with(&SystemRandom::new())
    }

    /// A fresh key from `rng` (tests inject a fixed one).
    pub fn generate_with(rng: &dyn SecureRandom) -> Result<Self, KeyError> {
        let mut bytes = Zeroizing::new([0u8; Self::BYTES]);
        rng.fill(bytes.as_mut()).map_err(|_| KeyError::Random)?;
        Ok(Self(bytes))
    }

    /// Loads a key from its 32 bytes (as unsealed from the store).
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; Self::BYTES] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength { found: bytes.len() })?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The key bytes, to seal them. Never log or print them.
    pub fn expose_secret(&self) -> &[u8; Self::BYTES] {
        &self.0
    }

    /// `"hmac-sha256:"` followed by the lower-case hex HMAC-SHA256 of
    /// `value` under this key.
    pub fn hash(&self, value: &[u8]) -> String {
        let tag = hmac::sign(&self.hmac_key(), value);
        format!(
            "{AUDIT_HASH_PREFIX}{}",
            data_encoding::HEXLOWER.encode(tag.as_ref())
        )
    }

    /// Whether `hashed` (as written by [`AuditKey::hash`]) is the hash of
    /// `value`; the comparison takes constant time.
    pub fn matches(&self, value: &[u8], hashed: &str) -> bool {
        let Some(hex) = hashed.strip_prefix(AUDIT_HASH_PREFIX) else {
            return false;
        };
        let Ok(tag) = data_encoding::HEXLOWER.decode(hex.as_bytes()) else {
            return false;
        };
        hmac::verify(&self.hmac_key(), value, &tag).is_ok()
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_ref())
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_hmac() {
        // RFC 4231 test case 2 uses a 4-byte key ("Jefe"); HMAC pads keys
        // shorter than the block, so the same key zero-padded to 32 bytes
        // gives the same tag.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let key = AuditKey::from_slice(&key).unwrap();
        assert_eq!(
            key.hash(b"what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hashes_match_only_their_value_and_key() {
        let a = AuditKey::generate().unwrap();
        let b = AuditKey::generate().unwrap();
        let h = a.hash(b"MOATTKN-1-secret");
        assert!(h.starts_with(AUDIT_HASH_PREFIX) && h.len() == 12 + 64);
        assert!(a.matches(b"MOATTKN-1-secret", &h));
        assert!(!a.matches(b"MOATTKN-1-secreT", &h));
        assert!(!b.matches(b"MOATTKN-1-secret", &h));
        assert!(!a.matches(b"MOATTKN-1-secret", &h[12..]));
        assert!(!a.matches(b"MOATTKN-1-secret", "hmac-sha256:zz"));
        assert_ne!(a.hash(b"x"), b.hash(b"x"));
    }

    #[test]
    fn debug_is_redacted_and_length_is_checked() {
        let key = AuditKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(format!("{key:?}"), "AuditKey(…)");
        assert_eq!(
            AuditKey::from_slice(&[0u8; 31]).unwrap_err(),
            KeyError::WrongLength { found: 31 }
        );
        assert_eq!(key.expose_secret(), &[7u8; 32]);
    }
}
