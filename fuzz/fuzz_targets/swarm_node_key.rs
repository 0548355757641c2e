#![no_main]
//! Fuzzes `moat_swarm::key::NodeKeyFile` (a Docker Swarm node's
//! `certificates/swarm-node.key`): parsing, its protection, and opening it
//! with no key and with a fixed unlock key.
//!
//! The fixed key is the unlock key of the `autolock` fixture in
//! `swarm/tests/fixtures` (a throw-away swarm that no longer exists), so
//! the seed made from that fixture opens all the way: raft data key and
//! PKCS#8 TLS key. PBKDF2 counts above 10,000 are not run (the library
//! bounds them at 10,000,000, too slow for fuzzing).

use libfuzzer_sys::fuzz_target;
use moat_swarm::error::SwarmError;
use moat_swarm::key::{KeyProtection, NodeKeyFile, UnlockKey};
use moat_swarm::record::RecordAlgorithm;

const FIXED_KEY: &str = "SWMKEY-1-678DTCe+/5TChgS6+0lHvW4M6wpPXntfODMJV+M96+8";

fuzz_target!(|data: &[u8]| {
    let Ok(key_file) = NodeKeyFile::parse(data) else {
        return;
    };
    let debug = format!("{key_file:?}");
    assert!(!debug.contains("raft-dek:"), "Debug shows a header value");
    let _ = key_file.protection();
    let _ = key_file.dek_readable_without_key();
    let _ = key_file.kek_version();

    let cheap = match key_file.protection() {
        KeyProtection::Pkcs8Pbes2 { iterations, .. } => *iterations <= 10_000,
        _ => true,
    };
    match key_file.open(None, None) {
        Ok(opened) => {
            // Without a key only clear (NONE) data keys can open.
            assert!(key_file.dek_readable_without_key() || opened.keys.is_empty());
            let _ = format!("{opened:?}");
        }
        Err(SwarmError::Locked { .. }) => {
            // Locked only when a data key is sealed.
            let sealed = |a: Option<RecordAlgorithm>| a.is_some_and(|a| a != RecordAlgorithm::None);
            assert!(
                sealed(key_file.raft_dek_algorithm())
                    || sealed(key_file.raft_dek_pending_algorithm())
            );
        }
        Err(e) => no_key_text(&e),
    }
    if cheap {
        let kek: UnlockKey = FIXED_KEY
            .parse()
            .unwrap_or_else(|e| panic!("the fixed key does not parse: {e}"));
        match key_file.open(Some(&kek), None) {
            Ok(opened) => {
                let debug = format!("{opened:?}");
                assert!(!debug.contains(&FIXED_KEY[9..25]));
            }
            Err(e) => no_key_text(&e),
        }
    }
});

fn no_key_text(e: &SwarmError) {
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains(&FIXED_KEY[9..25]),
        "an error echoes the unlock key: {text}"
    );
}
