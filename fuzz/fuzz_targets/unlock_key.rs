#![no_main]
//! Fuzzes `UnlockKey::from_str`: canonical text form, round trip, no key in errors or `Debug`.

use libfuzzer_sys::fuzz_target;
use moat_fuzz::{assert_not_echoed, repair_armor_checksum};
use moat_lock::UnlockKey;

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
    let key = match text.parse::<UnlockKey>() {
        Ok(key) => key,
        Err(e) => {
            assert_not_echoed(text, &format!("{e} {e:?}"));
            return;
        }
    };

    // One key, one text (surrounding whitespace aside).
    let encoded = key.expose_for_operator();
    assert_eq!(encoded.len(), UnlockKey::TEXT_LEN);
    assert_eq!(
        encoded.as_str(),
        text.trim(),
        "a non-canonical unlock key text was accepted"
    );

    // The encoding parses back to an equal key (constant-time `PartialEq`).
    let again: UnlockKey = encoded
        .parse()
        .unwrap_or_else(|e| panic!("re-encoded unlock key does not parse: {e}"));
    assert!(again == key, "round trip changed the unlock key");

    assert_eq!(format!("{key:?}"), "UnlockKey(…)");
}
