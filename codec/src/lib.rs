//! Text encodings shared by moat's identifiers and operator-handled secrets.
//!
//! Two things live here and nowhere else:
//!
//! * [`base32`]: lower-case, unpadded base32 (the RFC 4648 "extended hex"
//!   alphabet, `0-9a-v`), used for node and cluster ids and for every
//!   encoded field below. Decoding is strict: upper case, padding and
//!   non-canonical trailing bits are rejected, so every value has exactly one
//!   text form.
//! * [`Armor`]: the `PREFIX-VERSION-field-…-check` form of join tokens and
//!   unlock keys. A SHA-256-based checksum over the rest of the text catches a
//!   mistyped or truncated value offline, before it is sent anywhere.
//!
//! This crate does no I/O and holds no long-lived secrets; decoded field
//! bytes are returned in [`zeroize::Zeroizing`] buffers so callers can keep
//! secrets out of freed memory. Errors never echo the input text.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt::Write as _;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length in characters of the checksum that ends every armored string.
pub const CHECK_CHARS: usize = 8;
/// Bytes of SHA-256 kept as the checksum (`CHECK_CHARS` base32 characters).
const CHECK_BYTES: usize = 5;

/// Lower-case unpadded base32 with the extended-hex alphabet `0-9a-v`.
pub mod base32 {
    use super::DecodeError;
    use data_encoding::BASE32_DNSSEC;

    /// The 32 symbols, in value order.
    pub const ALPHABET: &str = "0123456789abcdefghijklmnopqrstuv";

    /// Number of characters that encode `bytes` bytes.
    pub const fn encoded_len(bytes: usize) -> usize {
        (bytes * 8).div_ceil(5)
    }

    /// Encodes `bytes` as lower-case base32 without padding.
    pub fn encode(bytes: &[u8]) -> String {
        BASE32_DNSSEC.encode(bytes)
    }

    /// Decodes exactly `out.len()` bytes from `text` into `out`.
    ///
    /// Rejects a wrong length, any character outside [`ALPHABET`] (including
    /// upper case) and non-canonical trailing bits, so that each value has a
    /// single text form.
    pub fn decode_into(text: &str, out: &mut [u8]) -> Result<(), DecodeError> {
        let expected = encoded_len(out.len());
        if text.len() != expected {
            return Err(DecodeError::Length {
                expected,
                found: text.chars().count(),
            });
        }
        if let Some(position) = text.bytes().position(|b| !ALPHABET.as_bytes().contains(&b)) {
            return Err(DecodeError::Character { position });
        }
        match BASE32_DNSSEC.decode_mut(text.as_bytes(), out) {
            Ok(n) if n == out.len() => Ok(()),
            // The alphabet and length were checked above, so the only
            // failure left is a last character carrying non-zero padding bits.
            _ => Err(DecodeError::Character {
                position: expected - 1,
            }),
        }
    }
}

/// Why a base32 field could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The text has the wrong number of characters.
    #[error("expected {expected} characters, found {found}")]
    Length {
        /// Characters required.
        expected: usize,
        /// Characters present.
        found: usize,
    },
    /// A character outside `0-9a-v`, or a last character that is not the
    /// canonical encoding of the value.
    #[error("invalid character at position {position} (allowed: 0-9 and a-v, lower case)")]
    Character {
        /// Zero-based character position inside the field.
        position: usize,
    },
}

/// A `PREFIX-VERSION-field-…-check` text format with fixed field sizes.
///
/// The check is the first five bytes of SHA-256 over everything before the
/// last `-` (prefix, version and fields as written), in base32. It detects
/// typing and truncation errors; it is not an authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armor {
    /// Product prefix, e.g. `MOATTKN`.
    pub prefix: &'static str,
    /// The one format version this armor writes and accepts.
    pub version: u32,
    /// Byte length of each field, in order.
    pub fields: &'static [usize],
}

/// Why an armored string was rejected. Each case is a different mistake the
/// operator can act on, so each has its own variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArmorError {
    /// The text does not start with the expected product prefix.
    #[error("does not start with {expected}-")]
    Prefix {
        /// The prefix this format requires.
        expected: &'static str,
    },
    /// The version field is not one this build understands.
    #[error(
        "format version {} is not supported (this build reads version {supported})",
        match .found { Some(v) => v.to_string(), None => "(unreadable)".to_owned() }
    )]
    Version {
        /// The version found, if the field is a short decimal number. Any
        /// other text is not echoed: when the version was left out, the
        /// field holds secret characters.
        found: Option<u32>,
        /// The version this build reads.
        supported: u32,
    },
    /// The text is longer or shorter than the format requires.
    #[error(
        "has {found} characters, expected {expected}: it looks truncated or has extra characters"
    )]
    Length {
        /// Characters required.
        expected: usize,
        /// Characters present (after trimming surrounding whitespace).
        found: usize,
    },
    /// A character that may not appear at its position.
    #[error("has an invalid character at position {position}")]
    Character {
        /// Zero-based position in the whole (trimmed) text.
        position: usize,
    },
    /// Structure and characters are fine but the checksum does not match.
    #[error("checksum does not match: it was mistyped or altered")]
    Checksum,
}

impl Armor {
    /// Total length of the text form in characters.
    pub const fn text_len(&self) -> usize {
        // prefix, '-', version digits, then per field '-' + chars, then '-' + check.
        let mut len = self.prefix.len() + 1 + decimal_digits(self.version);
        let mut i = 0;
        while i < self.fields.len() {
            len += 1 + base32::encoded_len(self.fields[i]);
            i += 1;
        }
        len + 1 + CHECK_CHARS
    }

    /// Encodes `fields` (one slice per declared field, of the declared size).
    ///
    /// # Panics
    ///
    /// If the number or sizes of `fields` differ from the format: that is a
    /// programming error in the caller, never a consequence of input.
    pub fn encode(&self, fields: &[&[u8]]) -> Zeroizing<String> {
        assert_eq!(fields.len(), self.fields.len(), "armor field count");
        let mut text = Zeroizing::new(String::with_capacity(self.text_len()));
        // Writing to a String cannot fail.
        let _ = write!(text, "{}-{}", self.prefix, self.version);
        for (field, &size) in fields.iter().zip(self.fields) {
            assert_eq!(field.len(), size, "armor field size");
            text.push('-');
            text.push_str(&Zeroizing::new(base32::encode(field)));
        }
        let check = checksum(&text);
        text.push('-');
        text.push_str(&check);
        text
    }

    /// Decodes and checks `text` (surrounding whitespace is ignored).
    ///
    /// Checks run from the outside in — prefix, version, length, characters,
    /// checksum — so the error names the first thing that is wrong.
    pub fn decode(&self, text: &str) -> Result<Vec<Zeroizing<Vec<u8>>>, ArmorError> {
        let text = text.trim();
        let Some(rest) = text
            .strip_prefix(self.prefix)
            .and_then(|r| r.strip_prefix('-'))
        else {
            return Err(ArmorError::Prefix {
                expected: self.prefix,
            });
        };
        let version = rest.split('-').next().unwrap_or_default();
        if version != self.version.to_string() {
            let found = (version.len() <= 3 && version.bytes().all(|b| b.is_ascii_digit()))
                .then(|| version.parse().ok())
                .flatten();
            return Err(ArmorError::Version {
                found,
                supported: self.version,
            });
        }
        let expected = self.text_len();
        let found = text.chars().count();
        if found != expected || text.len() != expected {
            return Err(ArmorError::Length { expected, found });
        }
        // From here on the text is ASCII-length-exact; walk the fields.
        let mut pos = self.prefix.len() + 1 + version.len();
        let mut out = Vec::with_capacity(self.fields.len());
        for &size in self.fields {
            pos = expect_dash(text, pos)?;
            let chars = base32::encoded_len(size);
            let mut bytes = Zeroizing::new(vec![0u8; size]);
            let field = text
                .get(pos..pos + chars)
                .ok_or(ArmorError::Character { position: pos })?;
            base32::decode_into(field, &mut bytes).map_err(|e| match e {
                DecodeError::Character { position } => ArmorError::Character {
                    position: pos + position,
                },
                DecodeError::Length { .. } => ArmorError::Character { position: pos },
            })?;
            out.push(bytes);
            pos += chars;
        }
        let body_end = pos;
        pos = expect_dash(text, pos)?;
        let given = &text[pos..];
        if let Some(p) = given
            .bytes()
            .position(|b| !base32::ALPHABET.as_bytes().contains(&b))
        {
            return Err(ArmorError::Character { position: pos + p });
        }
        let want = checksum(&text[..body_end]);
        if bool::from(want.as_bytes().ct_eq(given.as_bytes())) {
            Ok(out)
        } else {
            Err(ArmorError::Checksum)
        }
    }
}

fn expect_dash(text: &str, pos: usize) -> Result<usize, ArmorError> {
    if text.as_bytes().get(pos) == Some(&b'-') {
        Ok(pos + 1)
    } else {
        Err(ArmorError::Character { position: pos })
    }
}

fn checksum(body: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    base32::encode(&digest.as_ref()[..CHECK_BYTES])
}

const fn decimal_digits(mut n: u32) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FMT: Armor = Armor {
        prefix: "TEST",
        version: 1,
        fields: &[32, 16],
    };

    fn sample() -> String {
        FMT.encode(&[&[7u8; 32], &[9u8; 16]]).to_string()
    }

    #[test]
    fn text_len_matches_encoding() {
        assert_eq!(sample().len(), FMT.text_len());
        // TEST-1-<52>-<26>-<8>
        assert_eq!(FMT.text_len(), 4 + 1 + 1 + 1 + 52 + 1 + 26 + 1 + 8);
    }

    #[test]
    fn round_trip_and_whitespace() {
        let text = format!("  {}\n", sample());
        let fields = FMT.decode(&text).expect("decodes");
        assert_eq!(fields[0].as_slice(), &[7u8; 32]);
        assert_eq!(fields[1].as_slice(), &[9u8; 16]);
    }

    #[test]
    fn distinct_errors() {
        let good = sample();
        assert_eq!(
            FMT.decode(&good.replacen("TEST", "TSET", 1)),
            Err(ArmorError::Prefix { expected: "TEST" })
        );
        assert_eq!(
            FMT.decode(&good.replacen("TEST-1", "TEST-2", 1)),
            Err(ArmorError::Version {
                found: Some(2),
                supported: 1
            })
        );
        // Version left out: the next field is secret and must not be echoed.
        let err = FMT
            .decode(&good.replacen("TEST-1-", "TEST-", 1))
            .unwrap_err();
        assert_eq!(
            err,
            ArmorError::Version {
                found: None,
                supported: 1
            }
        );
        assert!(!err.to_string().contains(&good[7..12]));
        assert!(matches!(
            FMT.decode(&good[..good.len() - 1]),
            Err(ArmorError::Length { .. })
        ));
        let mut upper = good.clone().into_bytes();
        upper[10] = b'Z';
        assert_eq!(
            FMT.decode(std::str::from_utf8(&upper).unwrap()),
            Err(ArmorError::Character { position: 10 })
        );
        // A changed symbol inside a field keeps the structure but breaks the check.
        let mut typo = good.clone().into_bytes();
        typo[10] = if typo[10] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            FMT.decode(std::str::from_utf8(&typo).unwrap()),
            Err(ArmorError::Checksum)
        );
    }

    #[test]
    fn base32_is_strict() {
        let mut out = [0u8; 16];
        let text = base32::encode(&[0xffu8; 16]);
        assert_eq!(text.len(), 26);
        base32::decode_into(&text, &mut out).unwrap();
        assert_eq!(out, [0xff; 16]);
        assert!(base32::decode_into(&text.to_uppercase(), &mut out).is_err());
        // 128 bits in 26 chars leave 2 padding bits in the last character: a
        // last character with those bits set is not canonical.
        let mut bad = text.into_bytes();
        bad[25] = b'v';
        assert_eq!(
            base32::decode_into(std::str::from_utf8(&bad).unwrap(), &mut out),
            Err(DecodeError::Character { position: 25 })
        );
    }

    proptest! {
        #[test]
        fn armor_round_trips(a in proptest::array::uniform32(any::<u8>()), b in proptest::array::uniform16(any::<u8>())) {
            let text = FMT.encode(&[&a, &b]);
            let fields = FMT.decode(&text).unwrap();
            prop_assert_eq!(fields[0].as_slice(), &a[..]);
            prop_assert_eq!(fields[1].as_slice(), &b[..]);
        }

        #[test]
        fn armor_never_panics(s in ".{0,120}") {
            let _ = FMT.decode(&s);
        }

        #[test]
        fn armor_single_char_change_is_rejected(idx in 0usize..95, c in "[0-9a-zA-Z-]") {
            let good = sample();
            let mut bytes = good.clone().into_bytes();
            let c = c.as_bytes()[0];
            prop_assume!(bytes[idx] != c);
            bytes[idx] = c;
            let text = String::from_utf8(bytes).unwrap();
            prop_assert!(FMT.decode(&text).is_err());
        }

        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = base32::encode(&bytes);
            let mut out = vec![0u8; bytes.len()];
            base32::decode_into(&text, &mut out).unwrap();
            prop_assert_eq!(out, bytes);
        }
    }
}
