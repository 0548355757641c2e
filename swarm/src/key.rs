//! The unlock key and the node key file.
//!
//! * [`UnlockKey`]: `SWMKEY-1-` + 43 characters of base64 (standard
//!   alphabet, no padding) of 32 bytes. Those 32 bytes are the KEK as they
//!   are: there is no KDF between the text and the key.
//! * [`NodeKeyFile`]: `certificates/swarm-node.key`, a PEM block holding the
//!   node's TLS key (PKCS#8, encrypted under the KEK when autolock is on)
//!   and, in its headers, the raft data keys (`raft-dek`,
//!   `raft-dek-pending`), each a [`MaybeEncryptedRecord`] sealed with the
//!   KEK, or NONE (in clear) when autolock is off.
//!
//! [`NodeKeyFile::open`] checks a KEK twice: it must open the raft data
//! key(s) *and* the PKCS#8 TLS key, and the TLS key must match the node
//! certificate's public key. Attacker-chosen cost is bounded: the PBKDF2
//! iteration count is checked against [`MAX_PBKDF2_ITERATIONS`] before any
//! derivation. Keys live in zeroizing buffers and no `Debug` prints them.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use pkcs8::pkcs5;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{Notice, NoticeKind, Result, SwarmError};
use crate::record::{MaybeEncryptedRecord, RecordAlgorithm, RecordError};

/// The node key file's path in a state directory.
pub const NODE_KEY_FILE: &str = "certificates/swarm-node.key";

/// The most PBKDF2 iterations run for a key file (Swarm writes 2048).
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The largest PEM header value read (a raft-dek record is 104 characters).
const MAX_HEADER_VALUE: usize = 4096;

/// A Swarm unlock key (`SWMKEY-1-…`): the 32-byte KEK.
///
/// Parse it with [`str::parse`]; surrounding whitespace (a trailing
/// newline) is trimmed, anything else must be exact. `Debug` prints
/// `UnlockKey(…)`; there is no `Display`.
pub struct UnlockKey(Zeroizing<[u8; 32]>);

impl UnlockKey {
    const PREFIX: &'static str = "SWMKEY-1-";

    /// Compares the KEK with `other` (e.g. `Cluster.unlock_keys[].key` from
    /// the store) in constant time.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        other.len() == 32 && bool::from(self.0.as_slice().ct_eq(other))
    }

    pub(crate) fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for UnlockKey {
    type Err = SwarmError;

    fn from_str(s: &str) -> Result<UnlockKey> {
        let s = s.trim();
        let rest = s
            .strip_prefix(Self::PREFIX)
            .ok_or(SwarmError::UnlockKeyFormat {
                reason: "it does not start with SWMKEY-1-",
            })?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(rest)
                .map_err(|_| SwarmError::UnlockKeyFormat {
                    reason: "the part after SWMKEY-1- is not base64 without padding",
                })?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != key.len() {
            return Err(SwarmError::UnlockKeyFormat {
                reason: "it does not decode to 32 bytes",
            });
        }
        key.copy_from_slice(&bytes);
        Ok(UnlockKey(key))
    }
}

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(…)")
    }
}

/// A raft data key (DEK): 32 bytes, wiped when dropped. `Debug` prints
/// `Dek(…)`.
#[derive(Clone)]
pub struct Dek(Zeroizing<[u8; 32]>);

impl Dek {
    /// A data key from its bytes (tests, fuzzing).
    pub fn from_bytes(bytes: [u8; 32]) -> Dek {
        Dek(Zeroizing::new(bytes))
    }

    /// The key's bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_slice(b: &[u8], header: &str) -> Result<Dek> {
        let mut k = Zeroizing::new([0u8; 32]);
        if b.len() != k.len() {
            return Err(SwarmError::KeyFile {
                file: NODE_KEY_FILE.to_owned(),
                problem: format!(
                    "the {header} header holds a {}-byte key, not 32 bytes",
                    b.len()
                ),
            });
        }
        k.copy_from_slice(b);
        Ok(Dek(k))
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(…)")
    }
}

/// The raft data keys of a node, as [`crate::record::open`] uses them.
#[derive(Debug, Clone, Default)]
pub struct DataKeys {
    /// The current key (`raft-dek`).
    pub current: Option<Dek>,
    /// The key being rotated in (`raft-dek-pending`).
    pub pending: Option<Dek>,
    /// `raft-dek-needs-rotation: true` was set.
    pub needs_rotation: bool,
    /// How `raft-dek` was stored (NONE = in clear).
    pub current_alg: Option<RecordAlgorithm>,
    /// How `raft-dek-pending` was stored.
    pub pending_alg: Option<RecordAlgorithm>,
}

impl DataKeys {
    /// Data keys from bytes (tests, fuzzing, a caller holding them already).
    pub fn new(current: Option<Dek>, pending: Option<Dek>) -> DataKeys {
        DataKeys {
            current,
            pending,
            ..DataKeys::default()
        }
    }

    /// Whether there is any key at all.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.pending.is_none()
    }
}

/// How the TLS private key in `swarm-node.key` is protected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyProtection {
    /// Not encrypted (`PRIVATE KEY` or `EC PRIVATE KEY`): autolock is off.
    Plain,
    /// PKCS#8 PBES2 (what Docker 20.10 writes under autolock).
    Pkcs8Pbes2 {
        /// The KDF and its PRF, e.g. `PBKDF2-HMAC-SHA1`.
        kdf: String,
        /// The iteration count.
        iterations: u32,
        /// The cipher, e.g. `AES-256-CBC`.
        cipher: String,
    },
    /// Legacy RFC 1423 PEM encryption (`Proc-Type: 4,ENCRYPTED`): a single
    /// MD5 round as KDF, weak.
    LegacyRfc1423 {
        /// The `DEK-Info` cipher, e.g. `AES-256-CBC`.
        cipher: String,
    },
    /// Something else (what was found).
    Unknown(String),
}

/// `certificates/swarm-node.key`, parsed (nothing decrypted yet).
pub struct NodeKeyFile {
    tag: String,
    kek_version: Option<u64>,
    raft_dek: Option<Vec<u8>>,
    raft_dek_pending: Option<Vec<u8>>,
    needs_rotation: bool,
    der: Zeroizing<Vec<u8>>,
    protection: KeyProtection,
}

impl fmt::Debug for NodeKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKeyFile")
            .field("tag", &self.tag)
            .field("kek_version", &self.kek_version)
            .field("protection", &self.protection)
            .field("needs_rotation", &self.needs_rotation)
            .finish_non_exhaustive()
    }
}

/// What [`NodeKeyFile::open`] found.
#[derive(Debug)]
pub struct OpenedKey {
    /// The raft data keys.
    pub keys: DataKeys,
    /// Whether the TLS key's public key is the node certificate's: `None`
    /// when it could not be checked (encrypted and no key given, a legacy
    /// RFC 1423 key, no certificate given); the notices say why.
    pub tls_key_matches_cert: Option<bool>,
    /// Things to report (key not needed, TLS key not checked).
    pub notices: Vec<Notice>,
}

impl NodeKeyFile {
    /// Parses the PEM file (the caller bounds its size; see
    /// [`crate::dir::StateDir::node_key`]).
    pub fn parse(bytes: &[u8]) -> Result<NodeKeyFile> {
        let bad = |problem: String| SwarmError::KeyFile {
            file: NODE_KEY_FILE.to_owned(),
            problem,
        };
        let pem = pem::parse(bytes).map_err(|e| bad(format!("not a PEM file ({e})")))?;
        let headers = pem.headers();
        let header = |name: &str| -> Result<Option<String>> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) if v.len() > MAX_HEADER_VALUE => Err(SwarmError::TooLarge {
                    what: format!("{NODE_KEY_FILE} header {name}"),
                    size: u64::try_from(v.len()).unwrap_or(u64::MAX),
                    limit: MAX_HEADER_VALUE as u64,
                }),
                Some(v) => Ok(Some(v.trim().to_owned())),
            }
        };
        let kek_version = match header("kek-version")? {
            None => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| bad("the kek-version header is not a decimal number".into()))?,
            ),
        };
        let dek_record = |name: &str| -> Result<Option<Vec<u8>>> {
            match header(name)? {
                None => Ok(None),
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .map(Some)
                    .map_err(|_| bad(format!("the {name} header is not base64"))),
            }
        };
        let raft_dek = dek_record("raft-dek")?;
        let raft_dek_pending = dek_record("raft-dek-pending")?;
        let needs_rotation = match header("raft-dek-needs-rotation")?.as_deref() {
            None => false,
            // Go's strconv.ParseBool.
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => true,
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => false,
            Some(_) => {
                return Err(bad(
                    "the raft-dek-needs-rotation header is not true or false".into(),
                ));
            }
        };
        if raft_dek_pending.is_some() && raft_dek.is_none() {
            return Err(bad(
                "it has a raft-dek-pending header but no raft-dek header".into(),
            ));
        }
        let tag = pem.tag().to_owned();
        let proc_type = header("Proc-Type")?;
        let dek_info = header("DEK-Info")?;
        let der = Zeroizing::new(pem.into_contents());
        let protection = match (tag.as_str(), proc_type.as_deref()) {
            ("ENCRYPTED PRIVATE KEY", _) => pbes2_protection(&der),
            (_, Some(p)) if p.contains("ENCRYPTED") => KeyProtection::LegacyRfc1423 {
                cipher: dek_info
                    .as_deref()
                    .and_then(|d| d.split(',').next())
                    .unwrap_or("unknown")
                    .to_owned(),
            },
            ("PRIVATE KEY" | "EC PRIVATE KEY", _) => KeyProtection::Plain,
            (other, _) => KeyProtection::Unknown(format!("PEM type {other}")),
        };
        Ok(NodeKeyFile {
            tag,
            kek_version,
            raft_dek,
            raft_dek_pending,
            needs_rotation,
            der,
            protection,
        })
    }

    /// The PEM type (`ENCRYPTED PRIVATE KEY`, `PRIVATE KEY`, …).
    pub fn pem_tag(&self) -> &str {
        &self.tag
    }

    /// The `kek-version` header (information only).
    pub fn kek_version(&self) -> Option<u64> {
        self.kek_version
    }

    /// How the TLS key is protected, read from the file (no key needed).
    pub fn protection(&self) -> &KeyProtection {
        &self.protection
    }

    /// `raft-dek-needs-rotation: true` is set.
    pub fn needs_rotation(&self) -> bool {
        self.needs_rotation
    }

    /// The algorithm `raft-dek` is stored with (`None` when absent or it
    /// does not decode).
    pub fn raft_dek_algorithm(&self) -> Option<RecordAlgorithm> {
        header_alg(self.raft_dek.as_deref())
    }

    /// The algorithm `raft-dek-pending` is stored with.
    pub fn raft_dek_pending_algorithm(&self) -> Option<RecordAlgorithm> {
        header_alg(self.raft_dek_pending.as_deref())
    }

    /// Whether a raft data key is stored in clear (algorithm NONE), so the
    /// raft log can be read without the unlock key: a finding when the TLS
    /// key is encrypted, the normal state when autolock is off.
    pub fn dek_readable_without_key(&self) -> bool {
        self.raft_dek_algorithm() == Some(RecordAlgorithm::None)
            || self.raft_dek_pending_algorithm() == Some(RecordAlgorithm::None)
    }

    /// Opens the data keys (and checks the TLS key) with the KEK, if any.
    ///
    /// * No KEK: succeeds when every data key is stored in clear (NONE),
    ///   else [`SwarmError::Locked`].
    /// * A KEK: it must open every sealed data key and, for a PKCS#8
    ///   encrypted TLS key, that key too; else
    ///   [`SwarmError::WrongUnlockKey`] saying which check failed.
    /// * `node_cert_pem` (`certificates/swarm-node.crt`): when given and the
    ///   TLS key can be read, its public key is compared with the
    ///   certificate's.
    pub fn open(&self, kek: Option<&UnlockKey>, node_cert_pem: Option<&[u8]>) -> Result<OpenedKey> {
        let mut notices = Vec::new();
        let (current, current_alg) = self.open_dek(self.raft_dek.as_deref(), "raft-dek", kek)?;
        let (pending, pending_alg) =
            self.open_dek(self.raft_dek_pending.as_deref(), "raft-dek-pending", kek)?;

        let tls_der: Option<Zeroizing<Vec<u8>>> = match (&self.protection, kek) {
            (KeyProtection::Plain, _) if self.tag == "PRIVATE KEY" => Some(self.der.clone()),
            (KeyProtection::Plain, _) => {
                notices.push(not_checked("it is a SEC1 `EC PRIVATE KEY`, not PKCS#8"));
                None
            }
            (KeyProtection::Pkcs8Pbes2 { iterations, .. }, Some(kek)) => {
                if *iterations > MAX_PBKDF2_ITERATIONS {
                    return Err(SwarmError::TooLarge {
                        what: format!("the PBKDF2 iteration count of {NODE_KEY_FILE}"),
                        size: u64::from(*iterations),
                        limit: u64::from(MAX_PBKDF2_ITERATIONS),
                    });
                }
                let info = pkcs8::EncryptedPrivateKeyInfo::try_from(self.der.as_slice()).map_err(
                    |_| SwarmError::KeyFile {
                        file: NODE_KEY_FILE.to_owned(),
                        problem: "the encrypted PKCS#8 key does not decode".into(),
                    },
                )?;
                let doc =
                    info.decrypt(kek.expose_secret())
                        .map_err(|_| SwarmError::WrongUnlockKey {
                            check: "the key does not open swarm-node.key (its PKCS#8 TLS key)",
                        })?;
                Some(Zeroizing::new(doc.as_bytes().to_vec()))
            }
            (KeyProtection::Pkcs8Pbes2 { .. }, None) => {
                notices.push(not_checked("it is encrypted and no unlock key was given"));
                None
            }
            (KeyProtection::LegacyRfc1423 { .. }, _) => {
                notices.push(not_checked(
                    "it uses legacy RFC 1423 PEM encryption (weak: one MD5 round), which this reader does not decrypt",
                ));
                None
            }
            (KeyProtection::Unknown(what), _) => {
                notices.push(not_checked(&format!(
                    "its protection is not known ({what})"
                )));
                None
            }
        };

        let tls_key_matches_cert = match (tls_der, node_cert_pem) {
            (Some(der), Some(cert)) => match tls_public_key(&der) {
                Some(public) => Some(cert_public_key(cert)? == public),
                None => {
                    notices.push(not_checked("it does not read as a PKCS#8 P-256 key"));
                    None
                }
            },
            (Some(_), None) => {
                notices.push(not_checked("no node certificate was given"));
                None
            }
            (None, _) => None,
        };

        let sealed = [current_alg, pending_alg]
            .iter()
            .any(|a| matches!(a, Some(a) if *a != RecordAlgorithm::None));
        if kek.is_some() && !sealed && self.protection == KeyProtection::Plain {
            notices.push(Notice::new(
                NoticeKind::KeyNotNeeded,
                NODE_KEY_FILE,
                None,
                "an unlock key was given but this node is not locked (autolock is off); it was not used",
            ));
        }
        Ok(OpenedKey {
            keys: DataKeys {
                current,
                pending,
                needs_rotation: self.needs_rotation,
                current_alg,
                pending_alg,
            },
            tls_key_matches_cert,
            notices,
        })
    }

    fn open_dek(
        &self,
        record: Option<&[u8]>,
        header: &'static str,
        kek: Option<&UnlockKey>,
    ) -> Result<(Option<Dek>, Option<RecordAlgorithm>)> {
        let Some(record) = record else {
            return Ok((None, None));
        };
        let rec = MaybeEncryptedRecord::decode(record).map_err(|_| SwarmError::KeyFile {
            file: NODE_KEY_FILE.to_owned(),
            problem: format!("the {header} header does not decode"),
        })?;
        let plain = match (rec.algorithm, kek) {
            (RecordAlgorithm::None, _) => Zeroizing::new(rec.data.to_vec()),
            (RecordAlgorithm::Unknown(algorithm), _) => {
                return Err(SwarmError::UnknownAlgorithm {
                    file: format!("{NODE_KEY_FILE} ({header} header)"),
                    offset: 0,
                    algorithm,
                });
            }
            (_, None) => {
                return Err(SwarmError::Locked {
                    path: NODE_KEY_FILE.into(),
                });
            }
            (_, Some(kek)) => rec.open_with(kek.expose_secret()).map_err(|e| match e {
                RecordError::Auth => SwarmError::WrongUnlockKey {
                    check: if header == "raft-dek" {
                        "the key does not open this node's raft data key (raft-dek header)"
                    } else {
                        "the key does not open this node's pending raft data key (raft-dek-pending header)"
                    },
                },
                other => other.at(NODE_KEY_FILE, 0, None),
            })?,
        };
        Ok((Some(Dek::from_slice(&plain, header)?), Some(rec.algorithm)))
    }
}

fn header_alg(record: Option<&[u8]>) -> Option<RecordAlgorithm> {
    MaybeEncryptedRecord::decode(record?)
        .ok()
        .map(|r| r.algorithm)
}

fn not_checked(why: &str) -> Notice {
    Notice::new(
        NoticeKind::TlsKeyNotChecked,
        NODE_KEY_FILE,
        None,
        format!("the TLS key was not checked against swarm-node.crt: {why}"),
    )
}

fn pbes2_protection(der: &[u8]) -> KeyProtection {
    let Ok(info) = pkcs8::EncryptedPrivateKeyInfo::try_from(der) else {
        return KeyProtection::Unknown("encrypted PKCS#8 that does not decode".into());
    };
    let pkcs5::EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        return KeyProtection::Unknown("PKCS#5 PBES1".into());
    };
    let cipher = match params.encryption {
        pkcs5::pbes2::EncryptionScheme::Aes128Cbc { .. } => "AES-128-CBC",
        pkcs5::pbes2::EncryptionScheme::Aes192Cbc { .. } => "AES-192-CBC",
        pkcs5::pbes2::EncryptionScheme::Aes256Cbc { .. } => "AES-256-CBC",
        _ => "unknown cipher",
    };
    match &params.kdf {
        pkcs5::pbes2::Kdf::Pbkdf2(p) => {
            let prf = match p.prf {
                pkcs5::pbes2::Pbkdf2Prf::HmacWithSha1 => "SHA1",
                pkcs5::pbes2::Pbkdf2Prf::HmacWithSha224 => "SHA224",
                pkcs5::pbes2::Pbkdf2Prf::HmacWithSha256 => "SHA256",
                pkcs5::pbes2::Pbkdf2Prf::HmacWithSha384 => "SHA384",
                pkcs5::pbes2::Pbkdf2Prf::HmacWithSha512 => "SHA512",
                _ => "unknown",
            };
            KeyProtection::Pkcs8Pbes2 {
                kdf: format!("PBKDF2-HMAC-{prf}"),
                iterations: p.iteration_count,
                cipher: cipher.to_owned(),
            }
        }
        pkcs5::pbes2::Kdf::Scrypt(_) => {
            KeyProtection::Unknown(format!("PKCS#8 PBES2 scrypt, {cipher}"))
        }
        _ => KeyProtection::Unknown("PKCS#8 PBES2 with an unknown KDF".into()),
    }
}

/// The uncompressed P-256 public key of a PKCS#8 key (ring checks that the
/// public key stored in it belongs to the private key).
fn tls_public_key(pkcs8_der: &[u8]) -> Option<Vec<u8>> {
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8_der,
        &rng,
    )
    .ok()?;
    Some(pair.public_key().as_ref().to_vec())
}

fn cert_public_key(pem: &[u8]) -> Result<Vec<u8>> {
    let bad = |problem: &str| SwarmError::KeyFile {
        file: "certificates/swarm-node.crt".to_owned(),
        problem: problem.to_owned(),
    };
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|_| bad("not a PEM certificate"))?;
    let cert = block
        .parse_x509()
        .map_err(|_| bad("the certificate does not decode"))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "SWMKEY-1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn unlock_key_parses_and_compares() {
        let k: UnlockKey = format!("  {KEY}\n").parse().expect("parses");
        let bytes: Vec<u8> = (0u8..32).collect();
        assert!(k.ct_eq(&bytes));
        assert!(!k.ct_eq(&bytes[..31]));
        assert_eq!(format!("{k:?}"), "UnlockKey(…)");
    }

    #[test]
    fn unlock_key_errors_do_not_echo() {
        for bad in [
            "SWMKEY-2-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
            "SWMKEY-1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "SWMKEY-1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh",
            "SWMKEY-1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh!",
            "SWMKEY-1-AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9",
        ] {
            let e = bad.parse::<UnlockKey>().expect_err("refused");
            assert!(matches!(e, SwarmError::UnlockKeyFormat { .. }), "{e}");
            assert!(!e.to_string().contains("AAECAw"), "{e}");
        }
    }

    #[test]
    fn pending_without_current_is_refused() {
        let pem = "-----BEGIN PRIVATE KEY-----\nraft-dek-pending: EiA=\n\nAAAA\n-----END PRIVATE KEY-----\n";
        let e = NodeKeyFile::parse(pem.as_bytes()).expect_err("refused");
        assert!(e.to_string().contains("raft-dek-pending"), "{e}");
    }

    #[test]
    fn legacy_key_is_weak_and_debug_is_quiet() {
        let pem = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let k = NodeKeyFile::parse(pem.as_bytes()).expect("parses");
        assert_eq!(
            k.protection(),
            &KeyProtection::LegacyRfc1423 {
                cipher: "AES-256-CBC".into()
            }
        );
        assert!(!format!("{k:?}").contains("AAAA"));
        let opened = k.open(None, None).expect("no sealed DEK, nothing locked");
        assert!(opened.keys.is_empty());
        assert_eq!(opened.tls_key_matches_cert, None);
    }
}
