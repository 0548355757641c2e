//! [`SecretString`]: the one type for a secret that crosses the control API
//! (a join token, an unlock key or share, a passphrase).
//!
//! On the wire it is a plain JSON string, so a request or an answer that
//! switches from `String` to it keeps its bytes. In memory its buffer,
//! spare capacity included, is overwritten when it is dropped: when it
//! goes out of scope, when it is replaced, and when deserializing the
//! value around it fails after it was read. It has no `Display`, its
//! `Debug` prints `SecretString(…)`, and it has no `PartialEq`: compare
//! with [`SecretString::ct_eq`], in constant time. The text is read only
//! through [`SecretString::expose_secret`], which a reviewer can grep for.
//!
//! What it cannot wipe: copies made before the text reached it (a
//! terminal's or a reader's buffer, serde_json's scratch space for a
//! string with escapes) and copies the caller makes of the exposed text.
//! Build it from an owned `String` ([`SecretString::new`],
//! [`SecretString::from_trimmed_line`], [`SecretString::from_trimmed`]) or
//! read it straight into its own buffer ([`SecretString::read_line`]) to
//! leave none of the latter.

use std::fmt;
use std::io::{self, BufRead};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A secret string, wiped on drop; see the [module](self) documentation.
///
/// Not `Clone`: a secret has one owner, and a copy is made on purpose with
/// `SecretString::new(s.expose_secret().to_owned())`, which a reviewer
/// sees. `Default` is the empty string, for `#[serde(default)]` fields.
#[derive(Default)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Takes ownership of `value`, without copying it.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Takes ownership of a line read from a terminal or a pipe and removes
    /// its line ending (every trailing `\r` and `\n`) in place, without
    /// copying. Other white space is kept: it may be part of a passphrase.
    pub fn from_trimmed_line(value: String) -> Self {
        let mut secret = Self::new(value);
        let len = secret.0.trim_end_matches(['\r', '\n']).len();
        secret.0.truncate(len);
        secret
    }

    /// Takes ownership of `value` and removes leading and trailing white
    /// space in place: the text moves to the front of the same buffer
    /// (no new allocation), and what it leaves behind is wiped on drop
    /// with the rest of the capacity. For tokens and keys, which never
    /// hold white space.
    pub fn from_trimmed(value: String) -> Self {
        let mut secret = Self::new(value);
        let end = secret.0.trim_end().len();
        secret.0.truncate(end);
        let start = secret.0.len() - secret.0.trim_start().len();
        secret.0.drain(..start);
        secret
    }

    /// Reads one line of at most `max` bytes (line ending included) from
    /// `reader` straight into the secret's own buffer, allocated once, so
    /// that no reallocation leaves a copy behind; the line ending is
    /// removed as by [`SecretString::from_trimmed_line`]. `None` at the end
    /// of input. A longer line is an error of kind
    /// [`io::ErrorKind::InvalidData`], not a silently shortened secret;
    /// so is text that is not UTF-8.
    ///
    /// `max` is meant for a few KiB: the buffer is allocated up front.
    pub fn read_line(reader: impl BufRead, max: usize) -> io::Result<Option<Self>> {
        // One byte more than `max` tells a line that is too long from one
        // that fits; the room beyond it keeps the buffer from growing.
        let mut line = Zeroizing::new(String::with_capacity(max.saturating_add(64)));
        let read = reader
            .take(u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1))
            .read_line(&mut line)?;
        if read == 0 {
            return Ok(None);
        }
        if read > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the secret is longer than {max} bytes"),
            ));
        }
        let len = line.trim_end_matches(['\r', '\n']).len();
        line.truncate(len);
        Ok(Some(Self(line)))
    }

    /// The secret text. Every read goes through here.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (says nothing else about it).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares the secret with `other` in constant time (for a given
    /// length: the lengths themselves are not hidden).
    pub fn ct_eq(&self, other: impl AsRef<[u8]>) -> bool {
        self.0.as_bytes().ct_eq(other.as_ref()).into()
    }

    /// Hands the text over, still wiped on drop, without copying it.
    pub fn into_zeroizing(self) -> Zeroizing<String> {
        self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

/// Copies borrowed text (a literal in a test, a slice of a buffer the
/// caller wipes); prefer [`From<String>`] when you own the text.
impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl From<Zeroizing<String>> for SecretString {
    fn from(value: Zeroizing<String>) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(…)")
    }
}

impl Zeroize for SecretString {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// The inner `Zeroizing<String>` wipes the buffer when it is dropped.
impl ZeroizeOnDrop for SecretString {}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    /// Reads a string and moves it in: the only copy is the one serde
    /// makes from its input, and it is ours to wipe.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "MOATTKN-1-s3cr3t \"quoted\" \\ é\n";

    fn secret(text: &str) -> SecretString {
        SecretString::from(text)
    }

    #[test]
    fn json_is_the_same_as_a_plain_strings() {
        let json = serde_json::to_string(&secret(SECRET)).unwrap();
        assert_eq!(json, serde_json::to_string(SECRET).unwrap());
        let back: SecretString = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose_secret(), SECRET);
        assert!(serde_json::from_str::<SecretString>("42").is_err());
    }

    #[test]
    fn debug_shows_no_part_of_the_secret() {
        let shown = format!("{:?} {:#?}", secret("hunter2"), Some(secret("hunter2")));
        assert!(!shown.contains("hunter") && !shown.contains('2'), "{shown}");
        assert!(shown.contains("SecretString(…)"));
    }

    #[test]
    fn ct_eq_compares_the_whole_text() {
        let s = secret("abc");
        assert!(s.ct_eq("abc"));
        assert!(s.ct_eq(b"abc"));
        assert!(s.ct_eq(secret("abc").expose_secret()));
        for other in ["abd", "ab", "abcd", ""] {
            assert!(!s.ct_eq(other), "{other}");
        }
        assert!(SecretString::default().ct_eq(""));
    }

    #[test]
    fn from_trimmed_line_removes_only_the_line_ending() {
        for (line, want) in [
            ("pass phrase\n", "pass phrase"),
            ("pass phrase\r\n", "pass phrase"),
            (" pass \n\n", " pass "),
            ("pass", "pass"),
            ("\n", ""),
        ] {
            let s = SecretString::from_trimmed_line(line.to_owned());
            assert_eq!(s.expose_secret(), want, "{line:?}");
        }
    }

    #[test]
    fn from_trimmed_keeps_the_buffer() {
        let text = String::from("  \tMOATTKN-1-abc \r\n");
        let buffer = text.as_ptr();
        let s = SecretString::from_trimmed(text);
        assert_eq!(s.expose_secret(), "MOATTKN-1-abc");
        let z = s.into_zeroizing();
        assert_eq!(z.as_ptr(), buffer, "trimmed in place, not copied");
        assert_eq!(
            SecretString::from_trimmed(" \n ".into()).expose_secret(),
            ""
        );
    }

    #[test]
    fn read_line_reads_one_bounded_line() {
        let mut input: &[u8] = b"first\r\n\nthird";
        let mut next = || SecretString::read_line(&mut input, 8).unwrap();
        assert_eq!(next().unwrap().expose_secret(), "first");
        assert!(next().unwrap().is_empty());
        assert_eq!(next().unwrap().expose_secret(), "third");
        assert!(next().is_none(), "end of input");
        // Exactly `max` bytes, line ending included, fit; one more does not.
        let fits = SecretString::read_line(&b"1234567\n"[..], 8)
            .unwrap()
            .unwrap();
        assert_eq!(fits.expose_secret(), "1234567");
        let long = SecretString::read_line(&b"123456789\n"[..], 8).unwrap_err();
        assert_eq!(long.kind(), io::ErrorKind::InvalidData);
        assert!(
            !long.to_string().contains("1234"),
            "the error shows no secret"
        );
        let bad = SecretString::read_line(&b"\xff\n"[..], 8).unwrap_err();
        assert_eq!(bad.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn optional_and_default_fields_deserialize() {
        #[derive(Deserialize, Serialize)]
        struct Request {
            #[serde(default)]
            key: Option<SecretString>,
            #[serde(default)]
            share: SecretString,
        }
        let r: Request = serde_json::from_str("{}").unwrap();
        assert!(r.key.is_none() && r.share.is_empty());
        let json = r#"{"key":"k1","share":"s1"}"#;
        let r: Request = serde_json::from_str(json).unwrap();
        assert_eq!(r.key.as_ref().map(SecretString::expose_secret), Some("k1"));
        assert_eq!(r.share.expose_secret(), "s1");
        assert_eq!(serde_json::to_string(&r).unwrap(), json);
        // A failure after the secret was read drops (and wipes) it.
        assert!(serde_json::from_str::<Request>(r#"{"key":"k1","share":7}"#).is_err());
    }
}
