#![no_main]
//! Fuzzes `moat_report::Policy::parse` (the `--policy` file of `moat audit report`): size bound, no panic, JSON round trip, and any accepted policy drives the checks.

use libfuzzer_sys::fuzz_target;
use moat_report::fixtures::{NOW, troubled};
use moat_report::{MAX_POLICY_BYTES, Policy, PolicyError, fails, findings};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let policy = match Policy::parse(data) {
        Ok(policy) => policy,
        Err(PolicyError::TooLarge { len: told, max }) => {
            // Refused by size alone, and only when it is too large.
            assert_eq!((told, max), (len, MAX_POLICY_BYTES));
            assert!(len > MAX_POLICY_BYTES);
            return;
        }
        Err(e) => {
            assert!(len <= MAX_POLICY_BYTES, "{len} bytes were parsed: {e}");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(len <= MAX_POLICY_BYTES, "{len} bytes were accepted");

    // `moat audit report --format json` prints the policy in force; what it
    // prints reads back as the same policy (durations as `30d`, TLS
    // versions as `TLSv1.3`).
    let json = serde_json::to_string(&policy)
        .unwrap_or_else(|e| panic!("an accepted policy does not serialize: {e}"));
    let back: Policy = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("a policy's JSON does not read back: {e}: {json}"));
    assert_eq!(back, policy, "the JSON round trip changed the policy");

    // Any accepted threshold, however extreme, drives the checks without a
    // panic, and the verdict follows `fail_on`.
    let inv = troubled();
    let found = findings(&inv, &policy, NOW);
    assert_eq!(
        fails(&found, &policy),
        found.iter().any(|f| f.severity >= policy.fail_on)
    );
});
