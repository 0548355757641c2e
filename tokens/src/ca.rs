//! The pin on a cluster's root CA bundle.

use std::fmt;
use std::str::FromStr;

use data_encoding::HEXLOWER;
use subtle::{Choice, ConstantTimeEq};

use crate::TokenError;

/// Bytes in a [`CaDigest`].
pub const CA_DIGEST_BYTES: usize = 32;

const DISPLAY_PREFIX: &str = "sha256:";

/// SHA-256 of a cluster's root CA bundle: the pin a join token carries.
///
/// The digest covers the bundle byte for byte, so a bundle with an extra
/// root appended, a changed certificate or even changed whitespace has a
/// different digest. It is public (it is derived from public certificates)
/// and is written as `sha256:<64 lower-case hex characters>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest([u8; CA_DIGEST_BYTES]);

impl CaDigest {
    /// The digest of exactly `bundle`, as served by a manager.
    pub fn of(bundle: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bundle);
        let mut bytes = [0u8; CA_DIGEST_BYTES];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; CA_DIGEST_BYTES]) -> Self {
        Self(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; CA_DIGEST_BYTES] {
        &self.0
    }

    /// Constant-time comparison, for use next to secret comparisons.
    pub(crate) fn ct_eq_choice(&self, other: &Self) -> Choice {
        self.0[..].ct_eq(&other.0[..])
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DISPLAY_PREFIX)?;
        f.write_str(&HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaDigest({self})")
    }
}

impl FromStr for CaDigest {
    type Err = TokenError;

    /// Parses `sha256:<64 lower-case hex characters>`; nothing else (no
    /// upper case, no other algorithm) is accepted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(DISPLAY_PREFIX)
            .ok_or(TokenError::InvalidCaDigest)?;
        if hex.len() != CA_DIGEST_BYTES * 2 {
            return Err(TokenError::InvalidCaDigest);
        }
        let mut bytes = [0u8; CA_DIGEST_BYTES];
        match HEXLOWER.decode_mut(hex.as_bytes(), &mut bytes) {
            Ok(CA_DIGEST_BYTES) => Ok(Self(bytes)),
            _ => Err(TokenError::InvalidCaDigest),
        }
    }
}

impl serde::Serialize for CaDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CaDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
