//! Fixtures and checks shared by moat's fuzz targets and the `gen_seeds` helper.
//!
//! Nothing here is a real secret: the unlock key below exists only so that
//! sealed-blob seeds can be opened by the `sealed_blob` target, and so that
//! a crash found with it reproduces on any machine.

use std::sync::OnceLock;

use moat_codec::{CHECK_CHARS, base32};
use moat_lock::{Aad, HEADER_LEN, UnlockKey};

/// The fuzz fixture unlock key (generated once, offline; not a real key).
pub const FIXTURE_UNLOCK_KEY: &str =
    "MOATKEY-1-0bru6modlbn4p3a713bgf0uqibsb16tq0gch0tfooptf8sr2hflg-4qc8ltta";

/// The context every fixture blob is sealed for.
pub const FIXTURE_AAD: Aad<'static> = Aad::new("fuzz", "c", "n");

/// Another context, under which no fixture blob may open.
pub const OTHER_AAD: Aad<'static> = Aad::new("fuzz", "c", "m");

/// [`FIXTURE_UNLOCK_KEY`], parsed once.
pub fn fixture_key() -> &'static UnlockKey {
    static KEY: OnceLock<UnlockKey> = OnceLock::new();
    KEY.get_or_init(|| {
        FIXTURE_UNLOCK_KEY
            .parse()
            .unwrap_or_else(|e| panic!("the fixture unlock key does not parse: {e}"))
    })
}

/// The fuzz fixture age identity (generated once, offline; not a real
/// key): the `backup` seeds are encrypted to its recipient, so the target
/// opens them and a crash found through one reproduces anywhere.
pub const FIXTURE_AGE_IDENTITY: &str =
    "AGE-SECRET-KEY-16SQ39RS7E4XMRS8NMVV97MF2VWHG8JZ7HH9A86WFQRCGW2H6LVRS2H65H4";

/// Shortest run of base32 characters checked by [`assert_not_echoed`]. No
/// error message of the parsers contains a run of `0-9a-v` this long.
const ECHO_WINDOW: usize = 12;

/// Panics if `message` (an error's `Display` or `Debug`) contains any
/// [`ECHO_WINDOW`]-character stretch of the base32 text in `input`.
///
/// Token and unlock-key errors must never echo their input: it may be a
/// secret that was mistyped by one character.
pub fn assert_not_echoed(input: &str, message: &str) {
    let is_b32 = |b: u8| b.is_ascii_digit() || (b'a'..=b'v').contains(&b);
    for run in input.as_bytes().split(|&b| !is_b32(b)) {
        for window in run.windows(ECHO_WINDOW) {
            // `window` is ASCII, hence UTF-8.
            let window = std::str::from_utf8(window).unwrap_or_default();
            assert!(
                !message.contains(window),
                "error message echoes input text {window:?}: {message}"
            );
        }
    }
}

/// `text` with the armor checksum (its last [`CHECK_CHARS`] characters
/// before any trailing whitespace, after a `-`) recomputed over everything
/// before it, or `None` if `text` has no such place or the checksum is
/// already right.
///
/// A mutator cannot find a SHA-256 checksum on its own; repairing it lets
/// the token and unlock-key targets reach their success paths with mutated
/// fields.
pub fn repair_armor_checksum(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let start = trimmed.as_ptr() as usize - text.as_ptr() as usize;
    let check_at = trimmed.len().checked_sub(CHECK_CHARS)?;
    let body = trimmed.get(..check_at)?.strip_suffix('-')?;
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let check = base32::encode(digest.as_ref().get(..5)?);
    if trimmed.get(check_at..)? == check {
        return None;
    }
    let end = start + trimmed.len();
    Some(format!("{}{body}-{check}{}", &text[..start], &text[end..]))
}

/// Length of the part of a sealed-blob header its checksum covers.
const SEAL_CHECKED_LEN: usize = HEADER_LEN - 8;

/// `blob` with its sealed-blob header checksum (bytes 87..95, the first 8
/// bytes of SHA-256 over bytes 0..87) recomputed, or `None` if `blob` is
/// shorter than a header or the checksum is already right.
///
/// Lets the `sealed_blob` target fuzz the checks that sit behind the header
/// checksum: KDF id and bounds, key kind, key-check value and AEAD.
pub fn repair_seal_checksum(blob: &[u8]) -> Option<Vec<u8>> {
    let covered = blob.get(..SEAL_CHECKED_LEN)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, covered);
    let check = digest.as_ref().get(..8)?;
    if blob.get(SEAL_CHECKED_LEN..HEADER_LEN)? == check {
        return None;
    }
    let mut fixed = blob.to_vec();
    fixed
        .get_mut(SEAL_CHECKED_LEN..HEADER_LEN)?
        .copy_from_slice(check);
    Some(fixed)
}

/// The magic a plaintext backup starts with (moat-backup's format).
const BACKUP_MAGIC: &[u8] = b"MOATBACKUP";
/// Length of a backup's trailer: SHA-256 over every byte before it.
const BACKUP_TRAILER_LEN: usize = 32;

/// A plaintext backup with its trailer (the last 32 bytes, SHA-256 of
/// everything before them) recomputed, or `None` if `data` is not a
/// plaintext backup, is too short, or its trailer is already right.
///
/// Lets the `backup` target reach the manifest, origin and file checks
/// that sit behind the trailer with mutated payloads.
pub fn repair_backup_trailer(data: &[u8]) -> Option<Vec<u8>> {
    if !data.starts_with(BACKUP_MAGIC) {
        return None;
    }
    let body_len = data.len().checked_sub(BACKUP_TRAILER_LEN)?;
    let digest = ring::digest::digest(&ring::digest::SHA256, data.get(..body_len)?);
    if data.get(body_len..)? == digest.as_ref() {
        return None;
    }
    let mut fixed = data.get(..body_len)?.to_vec();
    fixed.extend_from_slice(digest.as_ref());
    Some(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_key_parses() {
        assert_eq!(
            fixture_key().expose_for_operator().as_str(),
            FIXTURE_UNLOCK_KEY
        );
    }

    #[test]
    fn armor_checksum_repair() {
        assert_eq!(repair_armor_checksum(FIXTURE_UNLOCK_KEY), None);
        let broken = FIXTURE_UNLOCK_KEY.replace("-4qc8ltta", "-00000000");
        assert_eq!(
            repair_armor_checksum(&format!(" {broken}\n")),
            Some(format!(" {FIXTURE_UNLOCK_KEY}\n"))
        );
        assert_eq!(repair_armor_checksum("short"), None);
        assert_eq!(repair_armor_checksum("€€€€€€€€€"), None);
    }

    #[test]
    fn seal_checksum_repair() {
        let blob = moat_lock::seal(
            moat_lock::KeySource::Key(fixture_key()),
            1,
            &FIXTURE_AAD,
            b"x",
        )
        .unwrap();
        assert_eq!(repair_seal_checksum(&blob), None);
        let mut broken = blob.clone();
        broken[90] ^= 1;
        assert_eq!(repair_seal_checksum(&broken), Some(blob.clone()));
        assert_eq!(repair_seal_checksum(&blob[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn backup_trailer_repair() {
        let mut data = b"MOATBACKUP1\nbody".to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        let mut good = data.clone();
        good.extend_from_slice(digest.as_ref());
        assert_eq!(repair_backup_trailer(&good), None);
        data.extend_from_slice(&[0; BACKUP_TRAILER_LEN]);
        assert_eq!(repair_backup_trailer(&data), Some(good));
        assert_eq!(repair_backup_trailer(b"MOATBACKUP1\n"), None);
        assert_eq!(repair_backup_trailer(&[b'x'; 64]), None);
    }

    #[test]
    fn fixture_age_identity_parses() {
        assert_eq!(
            moat_backup::parse_identity_file(FIXTURE_AGE_IDENTITY)
                .map(|ids| ids.len())
                .ok(),
            Some(1)
        );
    }

    #[test]
    #[should_panic(expected = "echoes")]
    fn echo_is_caught() {
        assert_not_echoed("MOATKEY-1-0123456789abcdef", "bad key 456789abcdef!");
    }

    #[test]
    fn short_or_absent_runs_pass() {
        assert_not_echoed("MOATKEY-1-0123456789abcdef", "bad key 456789abcde!");
        assert_not_echoed("characters", "expected 71 characters");
    }
}
