//! Autolock for moat: unlock keys, passphrase KDF, sealed blobs, data
//! encryption keys (DEKs) and crash-safe sealed files.
//!
//! This crate owns every key-encryption key (KEK) and DEK a node holds at
//! rest, and the one binary format they are stored in. It **never writes
//! plaintext key material to disk**: [`write_sealed_file`] accepts only data
//! whose header parses as a sealed blob. It never prints a secret: the
//! [`UnlockKey`], [`UnlockShare`], [`Passphrase`] and [`Dek`] types have no
//! `Display`, their `Debug` prints `…`, and no error message contains key
//! material. Secrets live in zeroizing buffers; secret comparisons are
//! constant-time. It writes no cryptography of its own: AES-256-GCM comes
//! from `aes-gcm`, Argon2id from `argon2`, HKDF-SHA256 and SHA-256 from
//! `ring`, Shamir secret sharing from `blahaj`, randomness from the operating
//! system (`rand_core::OsRng`).
//!
//! It may call `moat-codec` (text form of the unlock key) and nothing else in
//! moat, so the other crates can depend on it.
//!
//! # Unlock key
//!
//! 32 random bytes, shown to the operator once as
//! `MOATKEY-1-<52 base32 chars>-<8 char checksum>` ([`moat_codec::Armor`]).
//!
//! # Unlock-key shares
//!
//! Instead of one person holding the unlock key, [`split_unlock_key`] splits
//! it into N shares of which any K rebuild it and fewer reveal nothing
//! (Shamir secret sharing, `2 <= K <= N <= 16`). Each [`UnlockShare`] is
//! handed out once as
//! `MOATSHARE-1-<split id: 7>-<K: 2>-<N: 2>-<index: 2>-<share: 52>-<check: 8>`
//! (90 characters, checksummed like the key). A locked node collects them in
//! a [`ShareSet`], which refuses shares of another split (each split has a
//! random id) and repeated shares, reports [`ShareProgress`], and combines
//! once K are in. The format is in `docs/formats/unlock-key-shares.md`.
//!
//! # Unlock gate
//!
//! A locked node takes keys and shares through an [`UnlockGate`]: after
//! [`FREE_FAILURES`] wrong keys in a row nothing is tried for 1 s, then
//! 2 s, … up to [`MAX_BACKOFF`]; it collects shares and tries the rebuilt
//! key. It is pure: the caller passes the time and the check that opens
//! the node.
//!
//! # Sealed blob format, version 1
//!
//! All integers are big-endian. Offsets in bytes.
//!
//! | offset | len | field |
//! |-------:|----:|-------|
//! | 0  | 8  | magic `MOATSEAL` |
//! | 8  | 1  | format version, `1` |
//! | 9  | 1  | algorithm, `1` = AES-256-GCM |
//! | 10 | 1  | KDF: `0` = raw unlock key, `1` = argon2id passphrase |
//! | 11 | 4  | key id (u32, caller-supplied: DEK version, unlock-key generation) |
//! | 15 | 4  | argon2id memory cost in KiB (u32; 0 for a raw key) |
//! | 19 | 4  | argon2id time cost (u32; 0 for a raw key) |
//! | 23 | 4  | argon2id parallelism (u32; 0 for a raw key) |
//! | 27 | 32 | salt, random per blob |
//! | 59 | 16 | key-check value |
//! | 75 | 12 | AES-GCM nonce, random per blob |
//! | 87 | 8  | header checksum: first 8 bytes of SHA-256 over bytes 0..87 |
//! | 95 | n  | ciphertext (same length as the plaintext) |
//! | 95 + n | 16 | AES-GCM tag |
//!
//! Key schedule: the KEK is the unlock key itself, or
//! argon2id(passphrase, salt, params) with a 32-byte output. HKDF-SHA256
//! with the blob salt as HKDF salt extracts from the KEK and expands it into
//! the AES-256-GCM key (info `moat-seal-v1 aes-256-gcm`, 32 bytes) and the
//! key-check value (info `moat-seal-v1 key-check`, 16 bytes). The AEAD
//! associated data is the 95 header bytes followed by the caller's [`Aad`]:
//! purpose, cluster and node, each as a u64 length then the UTF-8 bytes.
//!
//! [`unseal`] checks, in order: size ([`MAX_BLOB_LEN`] = 64 MiB, at least
//! [`MIN_BLOB_LEN`]), magic, version, algorithm, header checksum
//! ([`LockError::HeaderDamaged`]), KDF id and argon2id bounds
//! ([`LockError::ExcessiveWork`], before the KDF runs), key kind, key-check
//! value in constant time ([`LockError::WrongKey`]), then AES-GCM
//! ([`LockError::Tampered`]). A wrong key and a damaged file are therefore
//! different errors. The header checksum is not a MAC: it classifies
//! accidental damage; the AEAD tag, which covers the header, is what
//! authenticates.
//!
//! # DEK records
//!
//! [`Dek::seal_record`] writes `[DEK version u32][nonce 12][ciphertext][tag
//! 16]` with AAD = the 4 version bytes followed by the caller's bytes, and
//! refuses after [`MAX_RECORDS_PER_DEK`] records per DEK value. A caller
//! that keeps a DEK across restarts carries its count over with
//! [`Dek::resume_leased`] and extends a durable lease
//! ([`Dek::extend_lease`]) before the count passes it.
//!
//! The full description is in `docs/formats/sealed-blob.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod dek;
mod error;
mod file;
mod gate;
mod key;
mod seal;
mod shamir;

pub use dek::{
    DEK_ROTATE_AT, Dek, DekSet, DekVersion, MAX_RECORDS_PER_DEK, RECORD_OVERHEAD, record_version,
};
pub use error::{KeyFormatError, KeyKind, LockError, ShareFormatError};
pub use file::{
    read_sealed_file, read_unlock_key_file, seal_to_file, unseal_file, write_file_atomic,
    write_sealed_file, write_unlock_key_file,
};
pub use gate::{
    Attempt, FREE_FAILURES, MAX_BACKOFF, Refusal, SetAside, Throttled, UnlockGate, UnlockInput,
};
pub use key::{KEY_LEN, KdfParams, KeySource, Passphrase, UnlockKey};
pub use seal::{
    Aad, BlobInfo, FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_BLOB_LEN, MAX_PLAINTEXT_LEN,
    MIN_BLOB_LEN, TAG_LEN, Unsealed, inspect, seal, unseal,
};
pub use shamir::{ShareProgress, ShareSet, SplitId, SplitInfo, UnlockShare, split_unlock_key};
