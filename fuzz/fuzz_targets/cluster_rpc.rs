#![no_main]
//! Fuzzes the cluster RPC bodies a manager decodes (`join` before it knows the caller, `task_sync`, `task_secrets` and `task_identity` from any member), the `ca_bundle` answer a joiner reads from an unverified manager, and the `task_sync`, `task_secrets` and `task_identity` answers a worker hands to its executor: no panic, a stable JSON round trip, no secret in `Debug`.
//!
//! The first byte picks the method (`moat_node::FUZZ_METHODS`, every
//! entry: the index is taken modulo its length), the rest is its body,
//! decoded by moat-node's own `rpc::decode`.
//!
//! With `MOAT_FUZZ_SEED_CHECK` set, a body that does not decode panics:
//! `MOAT_FUZZ_SEED_CHECK=1 cargo +nightly fuzz run cluster_rpc
//! fuzz/seeds/cluster_rpc -- -runs=0` checks the committed seeds.

use libfuzzer_sys::fuzz_target;
use moat_node::{FUZZ_METHODS, decode_request};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let method = FUZZ_METHODS[usize::from(which) % FUZZ_METHODS.len()];
    let decoded = match decode_request(method, body) {
        Ok(decoded) => decoded,
        Err(message) => {
            assert!(!message.is_empty(), "an empty error for {method}");
            // Checking the committed seeds: each must decode.
            if std::env::var_os("MOAT_FUZZ_SEED_CHECK").is_some() {
                panic!("{method}: a seed does not decode: {message}");
            }
            return;
        }
    };

    // Whatever a manager accepted re-encodes to JSON that it accepts
    // again, as the same request (a fixed point after one round).
    let again = decode_request(method, &decoded.json).unwrap_or_else(|e| {
        panic!(
            "{method}: a decoded request's own encoding is refused: {e}: {}",
            String::from_utf8_lossy(&decoded.json)
        )
    });
    assert_eq!(
        json(&decoded.json),
        json(&again.json),
        "{method}: the JSON round trip changed the request"
    );
    assert_eq!(decoded.debug, again.debug, "{method}: Debug changed");

    // A log line of the request never shows the join token: with another
    // token, the request prints exactly the same.
    if !decoded.secrets.is_empty() {
        let mut value = json(&decoded.json);
        if let Some(Value::String(token)) = value.get_mut("token") {
            *token = if token.as_str() == "x" { "y" } else { "x" }.to_owned();
        }
        // A secret's data (base64) in a `task_secrets` answer: the same
        // length of other bytes.
        if let Some(Value::Array(files)) = value.pointer_mut("/Ok/files") {
            for f in files {
                if let Some(Value::String(data)) = f.get_mut("data") {
                    // All zero bytes ('A' is canonical in any position).
                    *data = data
                        .chars()
                        .map(|c| if c == '=' { c } else { 'A' })
                        .collect();
                }
            }
        }
        let other = serde_json::to_vec(&value).unwrap_or_default();
        let other = decode_request(method, &other)
            .unwrap_or_else(|e| panic!("{method}: refused with another token: {e}"));
        assert_eq!(
            decoded.debug, other.debug,
            "{method}: Debug shows the join token"
        );
    }
});

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("re-encoded JSON does not parse: {e}"))
}
