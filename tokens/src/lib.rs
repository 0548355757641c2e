//! moat join tokens.
//!
//! This crate owns the [`JoinToken`]: generating it, its versioned and
//! checksummed text form (`MOATTKN-1-…`, armored by `moat-codec`), the pin
//! on the root CA bundle that a joining node checks ([`JoinToken::verify_ca`])
//! before it sends anything secret, the constant-time match that decides a
//! joining node's [`Role`](moat_pki::Role) ([`match_role`]), and the
//! non-secret [`TokenFingerprint`] and [`TokenInfo`] used in logs and
//! `moat token inspect`.
//!
//! It never prints, logs or formats a token secret (no `Display`, a `Debug`
//! that prints `"…"`, errors that never echo input), never compares secrets
//! in variable time, never panics on input, and does no I/O: storing a token
//! (encrypted) is the store's job. It calls only `moat-codec` (text format)
//! and `moat-pki` (the `Role` type).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ca;
mod error;
mod fingerprint;
mod token;

pub use ca::{CA_DIGEST_BYTES, CaDigest};
pub use error::TokenError;
pub use fingerprint::TokenFingerprint;
pub use token::{JoinToken, TOKEN_CHARS, TOKEN_PREFIX, TOKEN_VERSION, TokenInfo, match_role};

#[cfg(test)]
mod tests;
