//! The join check end to end, through the public API only: a manager mints
//! tokens, an operator copies one, a joining node checks the CA pin, and the
//! manager decides the role.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use moat_pki::Role;
use moat_tokens::{JoinToken, TokenError, match_role};

const CA_BUNDLE: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIBcluster\n-----END CERTIFICATE-----\n";

#[test]
fn worker_joins_through_text_and_ca_check() {
    // Manager side: one token per role, pinned to the cluster's CA bundle.
    let worker = JoinToken::generate(CA_BUNDLE).unwrap();
    let manager = JoinToken::generate(CA_BUNDLE).unwrap();

    // Operator copies the worker token text (with a trailing newline).
    let copied = format!("{}\n", worker.expose_secret().as_str());

    // Joining node: parse, then check the bundle the manager served.
    let presented: JoinToken = copied.parse().unwrap();
    assert_eq!(presented.verify_ca(CA_BUNDLE), Ok(()));
    assert_eq!(presented.fingerprint(), worker.fingerprint());

    // Manager side again: which role does the presented token grant?
    assert_eq!(
        match_role(&presented, &worker, &manager),
        Some(Role::Worker)
    );
}

#[test]
fn impostor_manager_is_detected_before_the_secret_is_sent() {
    let token = JoinToken::generate(CA_BUNDLE).unwrap();
    // An impostor serves the real root plus its own.
    let served = [
        CA_BUNDLE,
        b"-----BEGIN CERTIFICATE-----\nMIIBevil\n-----END CERTIFICATE-----\n",
    ]
    .concat();
    let err = token.verify_ca(&served).unwrap_err();
    let TokenError::CaMismatch { expected, found } = &err else {
        panic!("expected CaMismatch, got {err:?}");
    };
    assert_eq!(expected, token.ca_digest());
    assert_ne!(expected, found);
}

#[test]
fn rotated_token_no_longer_matches() {
    let old_worker = JoinToken::generate(CA_BUNDLE).unwrap();
    let new_worker = JoinToken::generate(CA_BUNDLE).unwrap();
    let manager = JoinToken::generate(CA_BUNDLE).unwrap();
    assert_eq!(match_role(&old_worker, &new_worker, &manager), None);
    assert_ne!(old_worker.fingerprint(), new_worker.fingerprint());
}
