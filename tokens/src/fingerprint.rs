//! A non-secret name for a join token, for logs and audit records.

use std::fmt;
use std::str::FromStr;

use data_encoding::HEXLOWER;

use crate::{CaDigest, TokenError};

/// Bytes in a [`TokenFingerprint`].
const FINGERPRINT_BYTES: usize = 8;

/// Domain separation: this hash is used for nothing else.
const FINGERPRINT_CONTEXT: &[u8] = b"moat-token-fingerprint-v1\0";

/// Names a join token without revealing it: the first 8 bytes of
/// `SHA-256("moat-token-fingerprint-v1\0" || secret || ca_digest)`, written
/// as 16 lower-case hex characters.
///
/// # Why it is safe to log
///
/// The fingerprint is a truncated hash of the 128-bit secret. Finding the
/// secret from it means trying secrets until one hashes to the fingerprint:
/// about 2^128 SHA-256 evaluations, out of reach. And because the
/// fingerprint keeps only 64 bits, about 2^64 different secrets share any
/// given fingerprint, so even unlimited computation could not tell which of
/// them is the real one. The context string keeps the value distinct from
/// every other hash moat computes over the same secret.
///
/// It lets an operator see which token a node joined with, or that a token
/// was rotated, without anyone who reads the log being able to join.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenFingerprint([u8; FINGERPRINT_BYTES]);

impl TokenFingerprint {
    /// The fingerprint of the token made of `secret` and `ca_digest`.
    pub(crate) fn compute(secret: &[u8], ca_digest: &CaDigest) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(FINGERPRINT_CONTEXT);
        ctx.update(secret);
        ctx.update(ca_digest.as_bytes());
        let digest = ctx.finish();
        let mut bytes = [0u8; FINGERPRINT_BYTES];
        for (out, b) in bytes.iter_mut().zip(digest.as_ref()) {
            *out = *b;
        }
        Self(bytes)
    }
}

impl fmt::Display for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFingerprint({self})")
    }
}

impl FromStr for TokenFingerprint {
    type Err = TokenError;

    /// Parses exactly 16 lower-case hex characters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != FINGERPRINT_BYTES * 2 {
            return Err(TokenError::InvalidFingerprint);
        }
        let mut bytes = [0u8; FINGERPRINT_BYTES];
        match HEXLOWER.decode_mut(s.as_bytes(), &mut bytes) {
            Ok(FINGERPRINT_BYTES) => Ok(Self(bytes)),
            _ => Err(TokenError::InvalidFingerprint),
        }
    }
}

impl serde::Serialize for TokenFingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TokenFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
