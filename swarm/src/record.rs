//! SwarmKit's `MaybeEncryptedRecord` (api/types.proto, proto3), the
//! envelope around every raft entry's data, every snapshot's data and the
//! raft data keys in `swarm-node.key`:
//!
//! ```text
//! 1 algorithm enum {0 NONE, 1 SECRETBOX_SALSA20_POLY1305, 2 FERNET_AES_128_CBC}
//! 2 data  bytes   NONE: the plaintext; SECRETBOX: 16-byte Poly1305 tag ‖ ciphertext;
//!                 FERNET: the ASCII token (URL-safe base64 with padding)
//! 3 nonce bytes   SECRETBOX: 24 bytes; FERNET: empty
//! ```
//!
//! [`open`] tries the pending data key, then the current one (as a running
//! node does during a rotation) and returns the plaintext of the first that
//! authenticates. Plaintexts are returned in zeroizing buffers and never
//! logged. This module also holds the small bounded protobuf wire reader
//! the other modules use (`wire`).

use std::fmt;

use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::error::SwarmError;
use crate::key::{DataKeys, Dek};

/// The algorithm a [`MaybeEncryptedRecord`] is sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordAlgorithm {
    /// 0: not encrypted; the data is the plaintext.
    None,
    /// 1: NaCl secretbox (XSalsa20-Poly1305), Docker's default.
    SecretboxSalsa20Poly1305,
    /// 2: Fernet (AES-128-CBC + HMAC-SHA256), used in FIPS mode.
    FernetAes128Cbc,
    /// Any other value, kept as read.
    Unknown(i32),
}

impl RecordAlgorithm {
    /// The algorithm for a protobuf enum value.
    pub fn from_i32(v: i32) -> RecordAlgorithm {
        match v {
            0 => RecordAlgorithm::None,
            1 => RecordAlgorithm::SecretboxSalsa20Poly1305,
            2 => RecordAlgorithm::FernetAes128Cbc,
            other => RecordAlgorithm::Unknown(other),
        }
    }
}

impl fmt::Display for RecordAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordAlgorithm::None => f.write_str("NONE"),
            RecordAlgorithm::SecretboxSalsa20Poly1305 => f.write_str("SECRETBOX_SALSA20_POLY1305"),
            RecordAlgorithm::FernetAes128Cbc => f.write_str("FERNET_AES_128_CBC"),
            RecordAlgorithm::Unknown(v) => write!(f, "UNKNOWN({v})"),
        }
    }
}

/// A decoded `MaybeEncryptedRecord`, borrowing the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeEncryptedRecord<'a> {
    /// The algorithm (field 1; absent means NONE).
    pub algorithm: RecordAlgorithm,
    /// The data (field 2).
    pub data: &'a [u8],
    /// The nonce (field 3).
    pub nonce: &'a [u8],
}

/// Why a record does not open. Turn it into a [`SwarmError`] naming the
/// file and offset with [`RecordError::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The record bytes do not decode (what is wrong).
    Malformed(&'static str),
    /// No candidate key authenticates it.
    Auth,
    /// The record is sealed and no data key is available.
    NoKey,
    /// An algorithm this reader does not know.
    UnknownAlgorithm(i32),
}

impl RecordError {
    /// This error as a [`SwarmError`] about the record at `offset` in
    /// `file` (raft `index` if it is an entry).
    pub fn at(self, file: &str, offset: u64, index: Option<u64>) -> SwarmError {
        match self {
            RecordError::Malformed(what) => SwarmError::Malformed {
                file: file.to_owned(),
                offset,
                what: format!("encrypted record: {what}"),
            },
            RecordError::Auth => SwarmError::Auth {
                file: file.to_owned(),
                offset,
                index,
            },
            RecordError::NoKey => SwarmError::Other(format!(
                "{file} at byte {offset}: the record is encrypted and no data key is available; \
                 pass the unlock key"
            )),
            RecordError::UnknownAlgorithm(algorithm) => SwarmError::UnknownAlgorithm {
                file: file.to_owned(),
                offset,
                algorithm,
            },
        }
    }
}

/// Which key opened a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhichKey {
    /// No key: the record is not encrypted (NONE).
    NoKey,
    /// The pending data key (`raft-dek-pending`).
    Pending,
    /// The current data key (`raft-dek`).
    Current,
}

/// An opened record.
pub struct Opened {
    /// The plaintext (wiped when dropped).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The record's algorithm.
    pub algorithm: RecordAlgorithm,
    /// The key that opened it.
    pub key: WhichKey,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .field("algorithm", &self.algorithm)
            .field("key", &self.key)
            .finish()
    }
}

impl<'a> MaybeEncryptedRecord<'a> {
    /// Decodes the record (proto3; unknown fields are skipped, unknown
    /// algorithm numbers kept).
    pub fn decode(bytes: &'a [u8]) -> std::result::Result<Self, RecordError> {
        let mut algorithm = RecordAlgorithm::None;
        let mut data: &[u8] = &[];
        let mut nonce: &[u8] = &[];
        let mut r = wire::Reader::new(bytes);
        while let Some((field, value)) = r.next().map_err(RecordError::Malformed)? {
            match (field, value) {
                (1, wire::Value::Varint(v)) => {
                    algorithm = RecordAlgorithm::from_i32(wire::as_i32(v))
                }
                (2, wire::Value::Bytes(b)) => data = b,
                (3, wire::Value::Bytes(b)) => nonce = b,
                (1..=3, _) => {
                    return Err(RecordError::Malformed("a field has the wrong wire type"));
                }
                _ => {}
            }
        }
        Ok(MaybeEncryptedRecord {
            algorithm,
            data,
            nonce,
        })
    }

    /// Opens the record with one 32-byte key (NONE needs none).
    pub fn open_with(
        &self,
        key: &[u8; 32],
    ) -> std::result::Result<Zeroizing<Vec<u8>>, RecordError> {
        match self.algorithm {
            RecordAlgorithm::None => Ok(Zeroizing::new(self.data.to_vec())),
            RecordAlgorithm::SecretboxSalsa20Poly1305 => {
                if self.nonce.len() != 24 {
                    return Err(RecordError::Malformed("secretbox nonce is not 24 bytes"));
                }
                if self.data.len() < 16 {
                    return Err(RecordError::Malformed(
                        "secretbox data is shorter than its 16-byte tag",
                    ));
                }
                let cipher = XSalsa20Poly1305::new(Key::from_slice(key));
                cipher
                    .decrypt(Nonce::from_slice(self.nonce), self.data)
                    .map(Zeroizing::new)
                    .map_err(|_| RecordError::Auth)
            }
            RecordAlgorithm::FernetAes128Cbc => {
                let token = std::str::from_utf8(self.data)
                    .map_err(|_| RecordError::Malformed("fernet token is not ASCII"))?;
                // The fernet crate takes the key as URL-safe base64 and splits
                // it as Fernet does: signing key = key[0..16], encryption
                // key = key[16..32] (SwarmKit's `fernet.Key` has the same
                // layout). TTL is not checked.
                use base64::Engine as _;
                let key_text =
                    Zeroizing::new(base64::engine::general_purpose::URL_SAFE.encode(key));
                let fernet =
                    fernet::Fernet::new(&key_text).ok_or(RecordError::Malformed("fernet key"))?;
                fernet
                    .decrypt(token)
                    .map(Zeroizing::new)
                    .map_err(|_| RecordError::Auth)
            }
            RecordAlgorithm::Unknown(v) => Err(RecordError::UnknownAlgorithm(v)),
        }
    }
}

/// Opens `record` (the bytes of a `MaybeEncryptedRecord`) with the data
/// keys: NONE records as they are; sealed ones with the pending key, then
/// the current key; the first that authenticates wins.
pub fn open(record: &[u8], keys: &DataKeys) -> std::result::Result<Opened, RecordError> {
    let rec = MaybeEncryptedRecord::decode(record)?;
    open_decoded(&rec, keys)
}

pub(crate) fn open_decoded(
    rec: &MaybeEncryptedRecord<'_>,
    keys: &DataKeys,
) -> std::result::Result<Opened, RecordError> {
    match rec.algorithm {
        RecordAlgorithm::None => {
            return Ok(Opened {
                plaintext: Zeroizing::new(rec.data.to_vec()),
                algorithm: rec.algorithm,
                key: WhichKey::NoKey,
            });
        }
        RecordAlgorithm::Unknown(v) => return Err(RecordError::UnknownAlgorithm(v)),
        _ => {}
    }
    let candidates: [(Option<&Dek>, WhichKey); 2] = [
        (keys.pending.as_ref(), WhichKey::Pending),
        (keys.current.as_ref(), WhichKey::Current),
    ];
    let mut tried = false;
    for (dek, which) in candidates {
        let Some(dek) = dek else { continue };
        tried = true;
        match rec.open_with(dek.expose_secret()) {
            Ok(plaintext) => {
                return Ok(Opened {
                    plaintext,
                    algorithm: rec.algorithm,
                    key: which,
                });
            }
            Err(RecordError::Auth) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(if tried {
        RecordError::Auth
    } else {
        RecordError::NoKey
    })
}

/// A minimal, bounded protobuf wire-format reader: no allocation, no
/// recursion, every length checked against the bytes left.
pub(crate) mod wire {
    /// One field value.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Value<'a> {
        Varint(u64),
        /// A fixed 64-bit value (not used by the messages read here).
        Fixed64,
        Bytes(&'a [u8]),
        /// A fixed 32-bit value (not used by the messages read here).
        Fixed32,
    }

    pub(crate) struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
            Reader { buf, pos: 0 }
        }

        /// How many bytes have been read.
        pub(crate) fn pos(&self) -> usize {
            self.pos
        }

        fn varint(&mut self) -> Result<u64, &'static str> {
            let mut v: u64 = 0;
            for i in 0..10 {
                let b = *self.buf.get(self.pos).ok_or("varint runs past the end")?;
                self.pos += 1;
                if i == 9 && b > 1 {
                    return Err("varint is longer than 64 bits");
                }
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    return Ok(v);
                }
            }
            Err("varint is longer than 10 bytes")
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
            let end = self.pos.checked_add(n).ok_or("length overflows")?;
            let s = self
                .buf
                .get(self.pos..end)
                .ok_or("a field runs past the end")?;
            self.pos = end;
            Ok(s)
        }

        /// The next field, or `None` at the end.
        #[allow(clippy::should_implement_trait)]
        pub(crate) fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, &'static str> {
            if self.pos >= self.buf.len() {
                return Ok(None);
            }
            let key = self.varint()?;
            let field = key >> 3;
            if field == 0 {
                return Err("field number 0");
            }
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Value::Fixed64
                }
                2 => {
                    let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                    Value::Bytes(self.take(n)?)
                }
                5 => {
                    self.take(4)?;
                    Value::Fixed32
                }
                _ => return Err("unsupported wire type (group or invalid)"),
            };
            Ok(Some((field, value)))
        }
    }

    /// A varint read as protobuf `int32` (the low 32 bits, two's complement).
    pub(crate) fn as_i32(v: u64) -> i32 {
        i32::from_le_bytes(low4(v))
    }

    /// A varint read as protobuf `uint32` (the low 32 bits).
    pub(crate) fn as_u32(v: u64) -> u32 {
        u32::from_le_bytes(low4(v))
    }

    /// A varint read as protobuf `int64` (two's complement).
    pub(crate) fn as_i64(v: u64) -> i64 {
        i64::from_le_bytes(v.to_le_bytes())
    }

    fn low4(v: u64) -> [u8; 4] {
        let b = v.to_le_bytes();
        [b[0], b[1], b[2], b[3]]
    }

    /// Reads a repeated `uint64` field's value, packed or not, into `out`.
    pub(crate) fn push_u64s(value: Value<'_>, out: &mut Vec<u64>) -> Result<(), &'static str> {
        match value {
            Value::Varint(v) => out.push(v),
            Value::Bytes(b) => {
                let mut r = Reader::new(b);
                while r.pos < b.len() {
                    out.push(r.varint()?);
                }
            }
            _ => return Err("a repeated integer has the wrong wire type"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_record_opens_without_keys() {
        let rec = [0x12, 0x03, b'a', b'b', b'c'];
        let keys = DataKeys::default();
        let o = open(&rec, &keys).expect("opens");
        assert_eq!(&o.plaintext[..], b"abc");
        assert_eq!(o.algorithm, RecordAlgorithm::None);
        assert_eq!(o.key, WhichKey::NoKey);
    }

    #[test]
    fn secretbox_round_trip_and_wrong_key() {
        let key = [7u8; 32];
        let nonce = [9u8; 24];
        let cipher = XSalsa20Poly1305::new(Key::from_slice(&key));
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), &b"hello"[..])
            .expect("seal");
        let mut rec = vec![0x08, 0x01, 0x12, u8::try_from(sealed.len()).expect("small")];
        rec.extend_from_slice(&sealed);
        rec.extend_from_slice(&[0x1a, 24]);
        rec.extend_from_slice(&nonce);
        let keys = DataKeys::new(Some(Dek::from_bytes([1u8; 32])), Some(Dek::from_bytes(key)));
        let o = open(&rec, &keys).expect("opens");
        assert_eq!(&o.plaintext[..], b"hello");
        assert_eq!(o.key, WhichKey::Pending);
        let other = DataKeys::new(Some(Dek::from_bytes([1u8; 32])), None);
        assert_eq!(open(&rec, &other).err(), Some(RecordError::Auth));
        assert_eq!(
            open(&rec, &DataKeys::default()).err(),
            Some(RecordError::NoKey)
        );
    }

    #[test]
    fn fernet_round_trip() {
        use base64::Engine as _;
        let key = [3u8; 32];
        let f = fernet::Fernet::new(&base64::engine::general_purpose::URL_SAFE.encode(key))
            .expect("key");
        let token = f.encrypt(b"payload");
        let mut rec = vec![0x08, 0x02, 0x12, u8::try_from(token.len()).expect("small")];
        rec.extend_from_slice(token.as_bytes());
        let keys = DataKeys::new(Some(Dek::from_bytes(key)), None);
        let o = open(&rec, &keys).expect("opens");
        assert_eq!(&o.plaintext[..], b"payload");
        assert_eq!(o.algorithm, RecordAlgorithm::FernetAes128Cbc);
    }

    #[test]
    fn unknown_algorithm_is_kept() {
        let rec = [0x08, 0x07];
        let d = MaybeEncryptedRecord::decode(&rec).expect("decodes");
        assert_eq!(d.algorithm, RecordAlgorithm::Unknown(7));
        assert_eq!(
            open(&rec, &DataKeys::default()).err(),
            Some(RecordError::UnknownAlgorithm(7))
        );
    }

    #[test]
    fn wire_reader_refuses_overruns() {
        for bad in [
            &[0x12, 0x05, 0x00][..],
            &[0x08][..],
            &[0x0b][..],
            &[0xff; 11][..],
        ] {
            assert!(MaybeEncryptedRecord::decode(bad).is_err());
        }
    }
}
