#![no_main]
//! Fuzzes the control API's request bodies (moat-api types the daemon deserializes from its socket): no panic, JSON round trip, and `Debug` never depends on a secret.
//!
//! The first byte picks the request type, the rest is its JSON body. The
//! daemon reads bodies with axum's `Json`, which is `serde_json` on the
//! whole body; this target does the same.

use libfuzzer_sys::fuzz_target;
use moat_api::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decodes `body` as `T`, as the daemon does, and checks what it decoded.
/// `secrets` names the top-level fields that hold a [`SecretString`].
fn check<T>(body: &[u8], secrets: &[&str])
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let Ok(request) = serde_json::from_slice::<T>(body) else {
        return;
    };
    // What was accepted encodes, and the encoding reads back as the same
    // request (compared as JSON values: not every type is `PartialEq`,
    // since secrets compare only in constant time).
    let value = serde_json::to_value(&request)
        .unwrap_or_else(|e| panic!("an accepted request does not encode: {e}"));
    let again: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("a request's own JSON does not decode: {e}: {value}"));
    let value_again = serde_json::to_value(&again)
        .unwrap_or_else(|e| panic!("a decoded request does not encode: {e}"));
    assert_eq!(
        value, value_again,
        "the JSON round trip changed the request"
    );

    if secrets.is_empty() {
        return;
    }
    // `Debug` (what a log line shows) is the same whatever the secrets
    // are: the request with every secret replaced by another text prints
    // exactly as the original.
    let Value::Object(mut fields) = value else {
        panic!("a request with secret fields is not a JSON object: {value}");
    };
    for name in secrets {
        if let Some(Value::String(s)) = fields.get_mut(*name) {
            *s = if s.as_str() == "x" { "y" } else { "x" }.to_owned();
        }
    }
    let blanked: T = serde_json::from_value(Value::Object(fields))
        .unwrap_or_else(|e| panic!("a request with other secrets does not decode: {e}"));
    assert_eq!(
        format!("{request:?}"),
        format!("{blanked:?}"),
        "Debug of a control request shows a secret"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    // One arm per POST route of node/src/control/mod.rs.
    match which % 30 {
        0 => check::<InitRequest>(body, &[]),
        1 => check::<JoinRequest>(body, &["token"]),
        2 => check::<LeaveRequest>(body, &[]),
        3 => check::<BackupRequest>(body, &["passphrase"]),
        4 => check::<JoinTokenRequest>(body, &[]),
        5 => check::<CreateTokenRequest>(body, &[]),
        6 => check::<TokenRef>(body, &[]),
        7 => check::<NodeRef>(body, &[]),
        8 => check::<RoleChangeRequest>(body, &[]),
        9 => check::<NodeRemoveRequest>(body, &[]),
        10 => check::<NodeUpdateRequest>(body, &[]),
        11 => check::<UpdateRequest>(body, &[]),
        12 => check::<UnlockRequest>(body, &["key", "share"]),
        13 => check::<AuditRecordsRequest>(body, &[]),
        14 => check::<AuditExportRequest>(body, &[]),
        15 => check::<AuditProveRequest>(body, &[]),
        16 => check::<AuditHashRequest>(body, &["value"]),
        17 => check::<CaRotateRequest>(body, &["ca_key_pem"]),
        18 => check::<Empty>(body, &[]),
        19 => check::<ServiceCreateRequest>(body, &[]),
        20 => check::<ServiceRef>(body, &[]),
        21 => check::<ServiceScaleRequest>(body, &[]),
        22 => check::<ServiceUpdateRequest>(body, &[]),
        23 => check::<ServiceRemoveRequest>(body, &[]),
        24 => check::<ServiceLogsRequest>(body, &[]),
        25 => check::<SecretCreateRequest>(body, &["data_base64"]),
        26 => check::<SecretUpdateRequest>(body, &["data_base64"]),
        27 => check::<SecretRefRequest>(body, &[]),
        28 => check::<SecretRemoveRequest>(body, &[]),
        // Decision D48: `moat audit archive`'s request.
        _ => check::<AuditArchiveRequest>(body, &[]),
    }
});
