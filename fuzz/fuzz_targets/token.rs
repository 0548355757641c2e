#![no_main]
//! Fuzzes `JoinToken::from_str`: canonical text form, round trip, no secret in errors or `Debug`.

use libfuzzer_sys::fuzz_target;
use moat_fuzz::{assert_not_echoed, repair_armor_checksum};
use moat_tokens::{JoinToken, TOKEN_CHARS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check(text);
    // Also with the checksum made right, so mutated fields get parsed all
    // the way through.
    if let Some(repaired) = repair_armor_checksum(text) {
        check(&repaired);
    }
});

fn check(text: &str) {
    let token = match text.parse::<JoinToken>() {
        Ok(token) => token,
        Err(e) => {
            assert_not_echoed(text, &format!("{e} {e:?}"));
            return;
        }
    };

    // One value, one text: whatever was accepted is exactly the canonical
    // encoding, up to the surrounding whitespace the parser ignores.
    let encoded = token.expose_secret();
    assert_eq!(encoded.len(), TOKEN_CHARS);
    assert_eq!(
        encoded.as_str(),
        text.trim(),
        "a non-canonical token text was accepted"
    );

    // The encoding parses back to the same token.
    let again: JoinToken = encoded
        .parse()
        .unwrap_or_else(|e| panic!("re-encoded token does not parse: {e}"));
    assert!(again.ct_eq(&token), "round trip changed the token");
    assert_eq!(again.fingerprint(), token.fingerprint());
    assert_eq!(again.info(), token.info());
    assert!(token.info().checksum_valid);

    // `Debug` shows neither the secret field nor the whole text.
    let secret_field = encoded.split('-').nth(3).unwrap_or_default();
    assert_eq!(secret_field.len(), 26);
    let debug = format!("{token:?}");
    assert!(
        !debug.contains(secret_field),
        "Debug prints the token secret"
    );
}
