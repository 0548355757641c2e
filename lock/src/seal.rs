//! The `MOATSEAL` sealed-blob format (layout in the crate docs).

use std::fmt;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use ring::hkdf;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{KeyKind, LockError};
use crate::key::{KEY_LEN, KdfParams, KeySource, fill_random};

/// First eight bytes of every sealed blob.
pub const MAGIC: &[u8; 8] = b"MOATSEAL";
/// The blob format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the fixed header in bytes (everything before the ciphertext).
pub const HEADER_LEN: usize = 95;
/// Length of the AES-GCM authentication tag at the end of a blob.
pub const TAG_LEN: usize = 16;
/// Smallest possible blob: a header and the tag of an empty plaintext.
pub const MIN_BLOB_LEN: usize = HEADER_LEN + TAG_LEN;
/// Largest blob `unseal` and `read_sealed_file` accept: 64 MiB. Larger input
/// is rejected before any other work.
pub const MAX_BLOB_LEN: usize = 64 * 1024 * 1024;
/// Largest plaintext `seal` accepts, so that every blob it writes can be read.
pub const MAX_PLAINTEXT_LEN: usize = MAX_BLOB_LEN - MIN_BLOB_LEN;

const ALG_AES_256_GCM: u8 = 1;
const KDF_RAW: u8 = 0;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 32;
const KCV_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const CHECKSUM_LEN: usize = 8;
const INFO_AEAD: &[u8] = b"moat-seal-v1 aes-256-gcm";
const INFO_KCV: &[u8] = b"moat-seal-v1 key-check";

/// Where sealed data belongs. Bound into the AEAD as associated data, so a
/// blob moved to another node, cluster or purpose fails to open.
///
/// Serialised as three length-prefixed fields (u64 big-endian length, then
/// the UTF-8 bytes): purpose, cluster, node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    /// What the data is, e.g. `"dek"`, `"ca-key"`.
    pub purpose: &'a str,
    /// The cluster id.
    pub cluster: &'a str,
    /// The node id.
    pub node: &'a str,
}

impl<'a> Aad<'a> {
    /// The context `purpose` / `cluster` / `node`.
    pub const fn new(purpose: &'a str, cluster: &'a str, node: &'a str) -> Self {
        Aad {
            purpose,
            cluster,
            node,
        }
    }

    fn append_to(&self, out: &mut Vec<u8>) {
        for field in [self.purpose, self.cluster, self.node] {
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
    }
}

/// What [`inspect`] learns from a blob header without any key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// The caller-supplied key id stored at sealing time.
    pub key_id: u32,
    /// Which kind of key opens the blob.
    pub key_kind: KeyKind,
    /// The argon2id parameters, for passphrase blobs.
    pub kdf_params: Option<KdfParams>,
}

/// A successfully unsealed blob.
pub struct Unsealed {
    /// The key id stored at sealing time.
    pub key_id: u32,
    /// The argon2id parameters used, for passphrase blobs (compare with the
    /// current policy to decide whether to re-seal).
    pub kdf_params: Option<KdfParams>,
    /// The plaintext, zeroized on drop.
    pub plaintext: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Unsealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unsealed")
            .field("key_id", &self.key_id)
            .field("kdf_params", &self.kdf_params)
            .field(
                "plaintext",
                &format_args!("<{} bytes>", self.plaintext.len()),
            )
            .finish()
    }
}

/// Seals `plaintext` under `key` for the context `aad`.
///
/// `key_id` is stored in the clear in the header (e.g. the DEK version or the
/// unlock-key generation) and returned by [`unseal`] and [`inspect`]. A fresh
/// random salt and nonce are drawn for every call.
pub fn seal(
    key: KeySource<'_>,
    key_id: u32,
    aad: &Aad<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, LockError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(LockError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let mut salt = [0u8; SALT_LEN];
    fill_random(&mut salt)?;
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;

    let (kdf, params, keys) = match key {
        KeySource::Key(k) => (KDF_RAW, None, SubKeys::derive(k.secret(), &salt)?),
        KeySource::Passphrase(p, params) => {
            let kek = params.derive(p, &salt)?;
            (KDF_ARGON2ID, Some(params), SubKeys::derive(&kek, &salt)?)
        }
    };

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&[FORMAT_VERSION, ALG_AES_256_GCM, kdf]);
    header.extend_from_slice(&key_id.to_be_bytes());
    let (m, t, p) = params.map_or((0, 0, 0), |p| (p.m_cost_kib(), p.t_cost(), p.p_cost()));
    for v in [m, t, p] {
        header.extend_from_slice(&v.to_be_bytes());
    }
    header.extend_from_slice(&salt);
    header.extend_from_slice(keys.kcv.as_slice());
    header.extend_from_slice(&nonce);
    let check = header_checksum(&header);
    header.extend_from_slice(&check);
    debug_assert_eq!(header.len(), HEADER_LEN);

    let aead_aad = aead_aad(&header, aad);
    // One allocation of the final size, so no partial copy of the plaintext
    // is left behind by a reallocation; the plaintext is encrypted in place.
    let mut blob = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    blob.extend_from_slice(&header);
    blob.extend_from_slice(plaintext);
    let body = blob.get_mut(HEADER_LEN..).ok_or(LockError::Crypto {
        what: "seal layout",
    })?;
    let tag = keys
        .cipher()?
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aead_aad, body)
        .map_err(|_| LockError::Crypto {
            what: "AES-256-GCM seal",
        })?;
    blob.extend_from_slice(&tag);
    Ok(blob)
}

/// Opens a blob sealed by [`seal`] for the same `aad`.
///
/// Checks run in this order, each before any more expensive step: size
/// (at most [`MAX_BLOB_LEN`], at least [`MIN_BLOB_LEN`]), magic, version,
/// algorithm, header checksum ([`LockError::HeaderDamaged`]), KDF id and
/// parameters ([`LockError::ExcessiveWork`] before argon2id runs), key kind,
/// key-check value ([`LockError::WrongKey`]), then authenticated decryption
/// ([`LockError::Tampered`]). For a passphrase, the parameters in `key` are
/// ignored and the header's are used.
pub fn unseal(key: KeySource<'_>, aad: &Aad<'_>, blob: &[u8]) -> Result<Unsealed, LockError> {
    let header = Header::parse(blob)?;
    let given = key.kind();
    if header.info.key_kind != given {
        return Err(LockError::KeyKindMismatch {
            sealed_with: header.info.key_kind,
            given,
        });
    }
    let keys = match (key, header.info.kdf_params) {
        (KeySource::Key(k), None) => SubKeys::derive(k.secret(), &header.salt)?,
        (KeySource::Passphrase(p, _), Some(params)) => {
            let kek = params.derive(p, &header.salt)?;
            SubKeys::derive(&kek, &header.salt)?
        }
        // Kinds were compared above.
        _ => return Err(LockError::Crypto { what: "key kind" }),
    };
    if !bool::from(keys.kcv.as_slice().ct_eq(&header.kcv)) {
        return Err(LockError::WrongKey);
    }

    let (header_bytes, rest) = blob
        .split_at_checked(HEADER_LEN)
        .ok_or(LockError::Truncated {
            len: blob.len(),
            min: MIN_BLOB_LEN,
        })?;
    let (ciphertext, tag) = rest
        .split_at_checked(rest.len().saturating_sub(TAG_LEN))
        .ok_or(LockError::Truncated {
            len: blob.len(),
            min: MIN_BLOB_LEN,
        })?;
    let aead_aad = aead_aad(header_bytes, aad);
    let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    plaintext.extend_from_slice(ciphertext);
    keys.cipher()?
        .decrypt_in_place_detached(
            Nonce::from_slice(&header.nonce),
            &aead_aad,
            plaintext.as_mut_slice(),
            Tag::from_slice(tag),
        )
        .map_err(|_| LockError::Tampered)?;
    Ok(Unsealed {
        key_id: header.info.key_id,
        kdf_params: header.info.kdf_params,
        plaintext,
    })
}

/// Reads and checks a blob header without a key: everything [`unseal`]
/// checks before it derives keys (size, magic, version, algorithm, header
/// checksum, KDF id and bounds). Use it to decide which key to ask for.
pub fn inspect(blob: &[u8]) -> Result<BlobInfo, LockError> {
    Header::parse(blob).map(|h| h.info)
}

struct Header {
    info: BlobInfo,
    salt: [u8; SALT_LEN],
    kcv: [u8; KCV_LEN],
    nonce: [u8; NONCE_LEN],
}

impl Header {
    fn parse(blob: &[u8]) -> Result<Header, LockError> {
        if blob.len() > MAX_BLOB_LEN {
            return Err(LockError::TooLarge {
                len: blob.len() as u64,
                max: MAX_BLOB_LEN as u64,
            });
        }
        let truncated = LockError::Truncated {
            len: blob.len(),
            min: MIN_BLOB_LEN,
        };
        // Check the magic first so arbitrary short input says "not sealed".
        let mut r = Reader(blob);
        match r.array::<8>() {
            Some(m) if &m == MAGIC => {}
            Some(_) => return Err(LockError::NotSealed),
            None if MAGIC.starts_with(blob) => return Err(truncated),
            None => return Err(LockError::NotSealed),
        }
        if blob.len() < MIN_BLOB_LEN {
            return Err(truncated);
        }
        let [version, algorithm, kdf] = r.array().ok_or(LockError::Crypto { what: "header" })?;
        if version != FORMAT_VERSION {
            return Err(LockError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if algorithm != ALG_AES_256_GCM {
            return Err(LockError::UnsupportedAlgorithm { found: algorithm });
        }
        let fields = (|| {
            Some((
                r.u32()?,
                [r.u32()?, r.u32()?, r.u32()?],
                r.array::<SALT_LEN>()?,
                r.array::<KCV_LEN>()?,
                r.array::<NONCE_LEN>()?,
                r.array::<CHECKSUM_LEN>()?,
            ))
        })();
        let (key_id, [m, t, p], salt, kcv, nonce, checksum) =
            fields.ok_or(LockError::Crypto { what: "header" })?;
        let covered = blob
            .get(..HEADER_LEN - CHECKSUM_LEN)
            .ok_or(LockError::Crypto { what: "header" })?;
        if !bool::from(header_checksum(covered).ct_eq(&checksum)) {
            return Err(LockError::HeaderDamaged);
        }
        let (key_kind, kdf_params) = match kdf {
            KDF_RAW if (m, t, p) == (0, 0, 0) => (KeyKind::UnlockKey, None),
            KDF_RAW => {
                return Err(LockError::InvalidHeader {
                    reason: "non-zero KDF parameters for a raw unlock key",
                });
            }
            KDF_ARGON2ID => (KeyKind::Passphrase, Some(KdfParams::from_stored(m, t, p)?)),
            found => return Err(LockError::UnsupportedKdf { found }),
        };
        Ok(Header {
            info: BlobInfo {
                key_id,
                key_kind,
                kdf_params,
            },
            salt,
            kcv,
            nonce,
        })
    }
}

/// Cursor over untrusted bytes: every read is length-checked.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
}

/// The two keys HKDF-SHA256 derives from the KEK and the blob salt.
struct SubKeys {
    aead: Zeroizing<[u8; KEY_LEN]>,
    kcv: Zeroizing<[u8; KCV_LEN]>,
}

impl SubKeys {
    fn derive(kek: &[u8; KEY_LEN], salt: &[u8; SALT_LEN]) -> Result<SubKeys, LockError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(kek);
        let mut aead = Zeroizing::new([0u8; KEY_LEN]);
        let mut kcv = Zeroizing::new([0u8; KCV_LEN]);
        for (info, out) in [
            (INFO_AEAD, aead.as_mut_slice()),
            (INFO_KCV, kcv.as_mut_slice()),
        ] {
            prk.expand(&[info], OkmLen(out.len()))
                .and_then(|okm| okm.fill(out))
                .map_err(|_| LockError::Crypto {
                    what: "HKDF-SHA256",
                })?;
        }
        Ok(SubKeys { aead, kcv })
    }

    fn cipher(&self) -> Result<Aes256Gcm, LockError> {
        Aes256Gcm::new_from_slice(self.aead.as_slice()).map_err(|_| LockError::Crypto {
            what: "AES-256-GCM key",
        })
    }
}

struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

fn header_checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; CHECKSUM_LEN];
    if let Some(head) = digest.as_ref().first_chunk::<CHECKSUM_LEN>() {
        out = *head;
    }
    out
}

fn aead_aad(header: &[u8], aad: &Aad<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        header.len() + 24 + aad.purpose.len() + aad.cluster.len() + aad.node.len(),
    );
    out.extend_from_slice(header);
    aad.append_to(&mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
pub(crate) mod tests {
    use super::*;
    use crate::key::{Passphrase, UnlockKey};
    use proptest::prelude::*;

    pub(crate) const AAD: Aad<'static> = Aad::new("test", "cluster-a", "node-1");

    pub(crate) fn passphrase(text: &str) -> Passphrase {
        Passphrase::new(Zeroizing::new(text.to_string())).unwrap()
    }

    fn key() -> UnlockKey {
        UnlockKey::from_bytes([7u8; KEY_LEN])
    }

    /// Overwrites a header field and recomputes the (unkeyed) checksum, as an
    /// attacker or a buggy writer could.
    fn forge(blob: &[u8], offset: usize, bytes: &[u8]) -> Vec<u8> {
        let mut out = blob.to_vec();
        out[offset..offset + bytes.len()].copy_from_slice(bytes);
        let check = header_checksum(&out[..HEADER_LEN - CHECKSUM_LEN]);
        out[HEADER_LEN - CHECKSUM_LEN..HEADER_LEN].copy_from_slice(&check);
        out
    }

    #[test]
    fn layout_offsets() {
        let blob = seal(KeySource::Key(&key()), 0x0102_0304, &AAD, b"hello").unwrap();
        assert_eq!(blob.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(&blob[..8], b"MOATSEAL");
        assert_eq!(blob[8], 1, "format version");
        assert_eq!(blob[9], 1, "AES-256-GCM");
        assert_eq!(blob[10], 0, "raw unlock key");
        assert_eq!(&blob[11..15], &[1, 2, 3, 4], "key id big-endian");
        assert_eq!(&blob[15..27], &[0u8; 12], "no kdf params for a raw key");
        let check = ring::digest::digest(&ring::digest::SHA256, &blob[..87]);
        assert_eq!(&blob[87..95], &check.as_ref()[..8]);
        assert!(!blob.windows(5).any(|w| w == b"hello"), "plaintext visible");

        let pass = passphrase("pw");
        let params = KdfParams::new(8192, 2, 1).unwrap();
        let blob = seal(KeySource::Passphrase(&pass, params), 9, &AAD, b"x").unwrap();
        assert_eq!(blob[10], 1, "argon2id");
        assert_eq!(&blob[15..19], &8192u32.to_be_bytes());
        assert_eq!(&blob[19..23], &2u32.to_be_bytes());
        assert_eq!(&blob[23..27], &1u32.to_be_bytes());
    }

    #[test]
    fn round_trip_with_key_and_passphrase() {
        let k = key();
        let blob = seal(KeySource::Key(&k), 42, &AAD, b"secret payload").unwrap();
        let out = unseal(KeySource::Key(&k), &AAD, &blob).unwrap();
        assert_eq!(out.plaintext.as_slice(), b"secret payload");
        assert_eq!(out.key_id, 42);
        assert_eq!(out.kdf_params, None);

        let pass = passphrase("correct horse battery staple");
        let params = KdfParams::minimum();
        let blob = seal(KeySource::Passphrase(&pass, params), 7, &AAD, b"").unwrap();
        // Params given at unseal time are ignored: the header's are used.
        let other = KdfParams::new(16384, 2, 2).unwrap();
        let out = unseal(KeySource::Passphrase(&pass, other), &AAD, &blob).unwrap();
        assert!(out.plaintext.is_empty());
        assert_eq!(out.key_id, 7);
        assert_eq!(out.kdf_params, Some(params));
        assert!(!format!("{out:?}").contains("horse"));
    }

    #[test]
    fn every_seal_is_fresh() {
        let k = key();
        let a = seal(KeySource::Key(&k), 1, &AAD, b"same").unwrap();
        let b = seal(KeySource::Key(&k), 1, &AAD, b"same").unwrap();
        assert_ne!(a[27..59], b[27..59], "salt must be random");
        assert_ne!(a[75..87], b[75..87], "nonce must be random");
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_is_reported_as_wrong_key() {
        let blob = seal(KeySource::Key(&key()), 1, &AAD, b"data").unwrap();
        let other = UnlockKey::from_bytes([8u8; KEY_LEN]);
        assert!(matches!(
            unseal(KeySource::Key(&other), &AAD, &blob),
            Err(LockError::WrongKey)
        ));

        let pass = passphrase("right");
        let blob = seal(
            KeySource::Passphrase(&pass, KdfParams::minimum()),
            1,
            &AAD,
            b"data",
        )
        .unwrap();
        let wrong = passphrase("wrong");
        assert!(matches!(
            unseal(
                KeySource::Passphrase(&wrong, KdfParams::minimum()),
                &AAD,
                &blob
            ),
            Err(LockError::WrongKey)
        ));
    }

    #[test]
    fn wrong_key_kind_is_named() {
        let k = key();
        let pass = passphrase("pw");
        let blob = seal(KeySource::Key(&k), 1, &AAD, b"data").unwrap();
        assert!(matches!(
            unseal(
                KeySource::Passphrase(&pass, KdfParams::minimum()),
                &AAD,
                &blob
            ),
            Err(LockError::KeyKindMismatch {
                sealed_with: KeyKind::UnlockKey,
                given: KeyKind::Passphrase
            })
        ));
        let blob = seal(
            KeySource::Passphrase(&pass, KdfParams::minimum()),
            1,
            &AAD,
            b"data",
        )
        .unwrap();
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &blob),
            Err(LockError::KeyKindMismatch {
                sealed_with: KeyKind::Passphrase,
                ..
            })
        ));
    }

    #[test]
    fn wrong_context_fails_authentication() {
        let k = key();
        let blob = seal(KeySource::Key(&k), 1, &AAD, b"data").unwrap();
        for aad in [
            Aad::new("other", "cluster-a", "node-1"),
            Aad::new("test", "cluster-b", "node-1"),
            Aad::new("test", "cluster-a", "node-2"),
            // Length prefixes keep field boundaries unambiguous.
            Aad::new("testc", "luster-a", "node-1"),
        ] {
            assert!(
                matches!(
                    unseal(KeySource::Key(&k), &aad, &blob),
                    Err(LockError::Tampered)
                ),
                "{aad:?}"
            );
        }
        unseal(KeySource::Key(&k), &AAD, &blob).unwrap();
    }

    fn assert_flip_detected(source: KeySource<'_>, blob: &[u8], masks: &[u8]) {
        for pos in 0..blob.len() {
            for &mask in masks {
                let mut bad = blob.to_vec();
                bad[pos] ^= mask;
                match unseal(source, &AAD, &bad) {
                    Ok(_) => panic!("flip {mask:#04x} at {pos} was accepted"),
                    Err(LockError::WrongKey) => {
                        panic!("flip {mask:#04x} at {pos} reported as WrongKey")
                    }
                    Err(e) => {
                        // Each region maps to its own error.
                        let expected = match pos {
                            0..8 => matches!(e, LockError::NotSealed),
                            8 => matches!(e, LockError::UnsupportedVersion { .. }),
                            9 => matches!(e, LockError::UnsupportedAlgorithm { .. }),
                            10..HEADER_LEN => matches!(e, LockError::HeaderDamaged),
                            _ => matches!(e, LockError::Tampered),
                        };
                        assert!(expected, "flip {mask:#04x} at {pos}: unexpected {e:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_byte_flip_is_detected_raw_key() {
        let k = key();
        let blob = seal(KeySource::Key(&k), 3, &AAD, b"twelve bytes").unwrap();
        let masks: Vec<u8> = (1..=255).collect();
        assert_flip_detected(KeySource::Key(&k), &blob, &masks);
    }

    #[test]
    fn every_byte_flip_is_detected_passphrase() {
        let pass = passphrase("pw");
        let source = KeySource::Passphrase(&pass, KdfParams::minimum());
        let blob = seal(source, 3, &AAD, b"abc").unwrap();
        assert_flip_detected(source, &blob, &[0x01, 0x80]);
    }

    #[test]
    fn truncation_is_detected() {
        let k = key();
        let blob = seal(KeySource::Key(&k), 1, &AAD, b"data").unwrap();
        for len in [0, 1, 7] {
            assert!(
                matches!(
                    unseal(KeySource::Key(&k), &AAD, &blob[..len]),
                    Err(LockError::Truncated { .. })
                ),
                "len {len}"
            );
        }
        for len in 8..MIN_BLOB_LEN {
            match unseal(KeySource::Key(&k), &AAD, &blob[..len]) {
                Err(LockError::Truncated { len: l, min }) => {
                    assert_eq!((l, min), (len, MIN_BLOB_LEN))
                }
                other => panic!("len {len}: {other:?}"),
            }
        }
        // Cut inside the ciphertext: the header is intact, the tag no longer
        // verifies.
        for len in MIN_BLOB_LEN..blob.len() {
            assert!(matches!(
                unseal(KeySource::Key(&k), &AAD, &blob[..len]),
                Err(LockError::Tampered)
            ));
        }
    }

    #[test]
    fn not_sealed_and_unknown_versions() {
        let k = key();
        let blob = seal(KeySource::Key(&k), 1, &AAD, b"data").unwrap();
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, b"{\"plain\": \"json\"}"),
            Err(LockError::NotSealed)
        ));
        let mut v2 = blob.clone();
        v2[8] = 2;
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &v2),
            Err(LockError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        ));
        // Version is checked before the checksum, even on a forged header.
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &forge(&blob, 8, &[9])),
            Err(LockError::UnsupportedVersion { found: 9, .. })
        ));
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &forge(&blob, 9, &[2])),
            Err(LockError::UnsupportedAlgorithm { found: 2 })
        ));
        assert!(matches!(
            inspect(&forge(&blob, 10, &[7])),
            Err(LockError::UnsupportedKdf { found: 7 })
        ));
        assert!(matches!(
            inspect(&forge(&blob, 15, &[0, 0, 32, 0])),
            Err(LockError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn excessive_work_is_rejected_before_the_kdf() {
        let pass = passphrase("pw");
        let source = KeySource::Passphrase(&pass, KdfParams::minimum());
        let blob = seal(source, 1, &AAD, b"data").unwrap();
        // 4 GiB: if argon2id ran, it would try to allocate 4 GiB and take
        // minutes. The bound is checked first, so this returns at once.
        let four_gib_kib: u32 = 4 * 1024 * 1024;
        let huge = forge(&blob, 15, &four_gib_kib.to_be_bytes());
        match unseal(source, &AAD, &huge) {
            Err(LockError::ExcessiveWork {
                m_cost_kib,
                t_cost,
                p_cost,
            }) => assert_eq!((m_cost_kib, t_cost, p_cost), (four_gib_kib, 1, 1)),
            other => panic!("expected ExcessiveWork, got {other:?}"),
        }
        let max_everything = forge(&blob, 15, &[[0xff; 4], [0xff; 4], [0xff; 4]].concat());
        assert!(matches!(
            unseal(source, &AAD, &max_everything),
            Err(LockError::ExcessiveWork { .. })
        ));
        assert!(matches!(
            unseal(source, &AAD, &forge(&blob, 19, &11u32.to_be_bytes())),
            Err(LockError::ExcessiveWork { t_cost: 11, .. })
        ));
        assert!(matches!(
            inspect(&forge(&blob, 23, &9u32.to_be_bytes())),
            Err(LockError::ExcessiveWork { p_cost: 9, .. })
        ));
        // Without re-forging the checksum the edit is plain damage.
        let mut damaged = blob.clone();
        damaged[15..19].copy_from_slice(&four_gib_kib.to_be_bytes());
        assert!(matches!(
            unseal(source, &AAD, &damaged),
            Err(LockError::HeaderDamaged)
        ));
    }

    #[test]
    fn oversized_input_is_rejected_first() {
        let k = key();
        let mut huge = vec![0u8; MAX_BLOB_LEN + 1];
        huge[..8].copy_from_slice(MAGIC);
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &huge),
            Err(LockError::TooLarge { .. })
        ));
        let too_much = vec![0u8; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            seal(KeySource::Key(&k), 1, &AAD, &too_much),
            Err(LockError::PlaintextTooLarge { .. })
        ));
    }

    #[test]
    fn inspect_reads_the_header_without_a_key() {
        let pass = passphrase("pw");
        let blob = seal(
            KeySource::Passphrase(&pass, KdfParams::minimum()),
            77,
            &AAD,
            b"x",
        )
        .unwrap();
        assert_eq!(
            inspect(&blob).unwrap(),
            BlobInfo {
                key_id: 77,
                key_kind: KeyKind::Passphrase,
                kdf_params: Some(KdfParams::minimum())
            }
        );
        let blob = seal(KeySource::Key(&key()), 5, &AAD, b"x").unwrap();
        assert_eq!(inspect(&blob).unwrap().key_kind, KeyKind::UnlockKey);
    }

    #[test]
    fn forged_key_check_value_is_wrong_key_not_success() {
        // The header checksum is not a MAC: someone who rewrites it can make a
        // right key look wrong, but never make a wrong key or altered data
        // open.
        let k = key();
        let blob = seal(KeySource::Key(&k), 1, &AAD, b"data").unwrap();
        let forged = forge(&blob, 59, &[0u8; KCV_LEN]);
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &forged),
            Err(LockError::WrongKey)
        ));
        let forged = forge(&blob, 11, &2u32.to_be_bytes());
        assert!(matches!(
            unseal(KeySource::Key(&k), &AAD, &forged),
            Err(LockError::Tampered)
        ));
    }

    proptest! {
        #[test]
        fn blobs_round_trip(
            bytes in proptest::array::uniform32(any::<u8>()),
            key_id in any::<u32>(),
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let k = UnlockKey::from_bytes(bytes);
            let blob = seal(KeySource::Key(&k), key_id, &AAD, &plaintext).unwrap();
            prop_assert_eq!(blob.len(), MIN_BLOB_LEN + plaintext.len());
            let out = unseal(KeySource::Key(&k), &AAD, &blob).unwrap();
            prop_assert_eq!(out.key_id, key_id);
            prop_assert_eq!(out.plaintext.as_slice(), plaintext.as_slice());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let k = key();
            prop_assert!(unseal(KeySource::Key(&k), &AAD, &bytes).is_err());
            let _ = inspect(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_magic_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let k = key();
            let mut blob = MAGIC.to_vec();
            blob.push(FORMAT_VERSION);
            blob.push(ALG_AES_256_GCM);
            blob.extend_from_slice(&bytes);
            prop_assert!(unseal(KeySource::Key(&k), &AAD, &blob).is_err());
        }

        #[test]
        fn forged_headers_never_panic_or_open(
            kdf in 0u8..3,
            params in proptest::array::uniform12(any::<u8>()),
            salt in proptest::array::uniform32(any::<u8>()),
        ) {
            let k = key();
            let blob = seal(KeySource::Key(&k), 1, &AAD, b"data").unwrap();
            let mut forged = forge(&blob, 10, &[kdf]);
            forged = forge(&forged, 15, &params);
            forged = forge(&forged, 27, &salt);
            prop_assume!(forged != blob);
            // Only inspect: a forged argon2id header within bounds would run
            // a real KDF, which is covered elsewhere.
            let _ = inspect(&forged);
            if kdf == KDF_RAW {
                prop_assert!(unseal(KeySource::Key(&k), &AAD, &forged).is_err());
            }
        }
    }
}
