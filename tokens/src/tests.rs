//! Unit tests for the join token, CA pin, fingerprint and matching.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::str::FromStr;

use moat_codec::base32;
use moat_pki::Role;
use proptest::prelude::*;

use crate::*;

const BUNDLE: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIBroot1\n-----END CERTIFICATE-----\n";
const OTHER_ROOT: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIBroot2\n-----END CERTIFICATE-----\n";

fn token() -> JoinToken {
    JoinToken::generate(BUNDLE).expect("system randomness")
}

/// A token with chosen secret bytes, built through the public text form.
fn token_from(ca: &[u8; 32], secret: &[u8; 16]) -> JoinToken {
    let text = moat_codec::Armor {
        prefix: TOKEN_PREFIX,
        version: TOKEN_VERSION,
        fields: &[32, 16],
    }
    .encode(&[ca, secret]);
    text.parse().expect("valid token")
}

/// The 26-character secret field of a token's text.
fn secret_field(text: &str) -> String {
    text.split('-').nth(3).expect("secret field").to_owned()
}

fn parse_err(text: &str) -> TokenError {
    match JoinToken::from_str(text) {
        Ok(_) => panic!("parsed a bad token"),
        Err(e) => e,
    }
}

// --- text form -------------------------------------------------------------

#[test]
fn text_form_has_documented_shape() {
    let t = token();
    let text = t.expose_secret();
    assert_eq!(text.len(), TOKEN_CHARS);
    assert_eq!(TOKEN_CHARS, 98);
    let parts: Vec<&str> = text.split('-').collect();
    assert_eq!(parts.len(), 5);
    assert_eq!(parts[0], "MOATTKN");
    assert_eq!(parts[1], "1");
    assert_eq!(parts[2].len(), 52);
    assert_eq!(parts[3].len(), 26);
    assert_eq!(parts[4].len(), 8);
    // The first field is the CA digest, in the codec's base32.
    assert_eq!(parts[2], base32::encode(CaDigest::of(BUNDLE).as_bytes()));
}

#[test]
fn text_round_trip_keeps_digest_and_secret() {
    let t = token();
    let back: JoinToken = t.expose_secret().parse().unwrap();
    assert!(back.ct_eq(&t));
    assert_eq!(back.ca_digest(), t.ca_digest());
    assert_eq!(*back.expose_secret(), *t.expose_secret());
}

/// Guards the documented format: the example in docs/formats/join-token.md
/// (CA bundle `example`, secret bytes 0..16) must keep parsing to the same
/// digest and fingerprint, and encoding must reproduce it byte for byte.
#[test]
fn documented_example_is_stable() {
    const EXAMPLE: &str = "MOATTKN-1-a3c5ho4obr67uo21hangphdbb1vk5gin1a4415d9t36apk7mahe0-000g40o40k30e209185go38e1s-fab7dejo";
    let t: JoinToken = EXAMPLE.parse().unwrap();
    assert_eq!(*t.ca_digest(), CaDigest::of(b"example"));
    assert_eq!(
        t.ca_digest().to_string(),
        "sha256:50d858e0985ecc7f60418aaf0cc5ab587f42c2570a884095a9e8ccacd0f6545c"
    );
    assert_eq!(t.fingerprint().to_string(), "d521ad5c52be1a11");
    let secret: [u8; 16] = std::array::from_fn(|i| i as u8);
    let rebuilt = token_from(CaDigest::of(b"example").as_bytes(), &secret);
    assert_eq!(rebuilt.expose_secret().as_str(), EXAMPLE);
}

#[test]
fn surrounding_whitespace_is_ignored() {
    let t = token();
    let text = format!("  {}\n", t.expose_secret().as_str());
    assert!(text.parse::<JoinToken>().unwrap().ct_eq(&t));
}

#[test]
fn generated_secrets_differ() {
    let a = token();
    let b = token();
    assert_eq!(a.ca_digest(), b.ca_digest());
    assert!(!a.ct_eq(&b), "two 128-bit secrets collided");
}

#[test]
fn generate_with_uses_injected_rng() {
    struct Fixed(u8);
    impl rand_core::RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            u32::from(self.0)
        }
        fn next_u64(&mut self) -> u64 {
            u64::from(self.0)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rand_core::CryptoRng for Fixed {}

    let a = JoinToken::generate_with(BUNDLE, &mut Fixed(7)).unwrap();
    let b = JoinToken::generate_with(BUNDLE, &mut Fixed(7)).unwrap();
    let c = JoinToken::generate_with(BUNDLE, &mut Fixed(8)).unwrap();
    assert!(a.ct_eq(&b));
    assert!(!a.ct_eq(&c));
    assert!(a.ct_eq(&token_from(CaDigest::of(BUNDLE).as_bytes(), &[7; 16])));
}

#[test]
fn failing_rng_is_a_typed_error() {
    struct Broken;
    impl rand_core::RngCore for Broken {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, _: &mut [u8]) {}
        fn try_fill_bytes(&mut self, _: &mut [u8]) -> Result<(), rand_core::Error> {
            Err(rand_core::Error::from(std::num::NonZeroU32::MIN))
        }
    }
    impl rand_core::CryptoRng for Broken {}
    assert!(matches!(
        JoinToken::generate_with(BUNDLE, &mut Broken),
        Err(TokenError::Randomness)
    ));
}

// --- parse errors ------------------------------------------------------------

#[test]
fn wrong_prefix() {
    let text = token().expose_secret().replacen("MOATTKN", "MOATKEY", 1);
    assert_eq!(parse_err(&text), TokenError::WrongPrefix);
    assert_eq!(parse_err(""), TokenError::WrongPrefix);
    assert_eq!(parse_err("hello"), TokenError::WrongPrefix);
    let lower = token().expose_secret().replacen("MOATTKN", "moattkn", 1);
    assert_eq!(parse_err(&lower), TokenError::WrongPrefix);
}

#[test]
fn docker_token_is_recognised() {
    // Shape of a Docker Swarm token: SWMTKN-1-<50 base36>-<25 base36>.
    let docker = format!("SWMTKN-1-{}-{}", "3".repeat(50), "a".repeat(25));
    let err = parse_err(&docker);
    assert_eq!(err, TokenError::DockerToken);
    let msg = err.to_string();
    assert!(msg.contains("Docker Swarm"), "{msg}");
    assert!(msg.contains("moat join-token worker"), "{msg}");
    assert_eq!(parse_err(&format!("  {docker}")), TokenError::DockerToken);
}

#[test]
fn unsupported_version() {
    let text = token()
        .expose_secret()
        .replacen("MOATTKN-1-", "MOATTKN-2-", 1);
    let err = parse_err(&text);
    assert_eq!(
        err,
        TokenError::UnsupportedVersion {
            found: Some(2),
            supported: 1
        }
    );
    assert!(
        err.to_string().contains("version 2 is not supported"),
        "{err}"
    );

    // A version that is not a plain number is not echoed.
    let text = token()
        .expose_secret()
        .replacen("MOATTKN-1-", "MOATTKN-x1-", 1);
    assert_eq!(
        parse_err(&text),
        TokenError::UnsupportedVersion {
            found: None,
            supported: 1
        }
    );
    let text = token()
        .expose_secret()
        .replacen("MOATTKN-1-", "MOATTKN-01-", 1);
    assert_eq!(
        parse_err(&text),
        TokenError::UnsupportedVersion {
            found: None,
            supported: 1
        }
    );
}

#[test]
fn one_char_short_is_wrong_length() {
    let text = token().expose_secret();
    let err = parse_err(&text[..text.len() - 1]);
    assert_eq!(
        err,
        TokenError::WrongLength {
            expected: 98,
            found: 97
        }
    );
    assert!(err.to_string().contains("copied completely"), "{err}");
    let longer = format!("{}0", text.as_str());
    assert_eq!(
        parse_err(&longer),
        TokenError::WrongLength {
            expected: 98,
            found: 99
        }
    );
}

#[test]
fn uppercase_char_is_invalid_character_with_position() {
    let text = token().expose_secret();
    let mut bytes = text.as_bytes().to_vec();
    // Position 20 lies inside the CA digest field (10..62).
    bytes[20] = b'Z';
    let err = parse_err(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(err, TokenError::InvalidCharacter { position: 20 });
    assert!(err.to_string().contains("position 21"), "{err}");
    // The whole token upper-cased: rejected at the first field character.
    let upper = text.to_uppercase();
    assert_eq!(
        parse_err(&upper),
        TokenError::InvalidCharacter { position: 10 }
    );
}

#[test]
fn missing_separator_is_invalid_character() {
    let text = token().expose_secret();
    let mut bytes = text.as_bytes().to_vec();
    bytes[62] = b'0'; // the '-' between digest and secret
    assert_eq!(
        parse_err(std::str::from_utf8(&bytes).unwrap()),
        TokenError::InvalidCharacter { position: 62 }
    );
}

#[test]
fn one_char_changed_is_bad_checksum() {
    let text = token().expose_secret();
    let mut bytes = text.as_bytes().to_vec();
    // Position 70 lies inside the secret field (63..89); use a symbol whose
    // low bits are fine anywhere in the field.
    bytes[70] = if bytes[70] == b'0' { b'1' } else { b'0' };
    let err = parse_err(std::str::from_utf8(&bytes).unwrap());
    assert_eq!(err, TokenError::BadChecksum);
    assert!(err.to_string().contains("mistyped"), "{err}");
}

#[test]
fn parse_errors_never_echo_the_token() {
    let text = token().expose_secret();
    let secret = secret_field(&text);
    let mut typo = text.as_bytes().to_vec();
    typo[70] = if typo[70] == b'0' { b'1' } else { b'0' };
    let typo = String::from_utf8(typo).unwrap();
    let cases = [
        typo.clone(),
        text[..text.len() - 1].to_owned(),
        text.replacen("MOATTKN-1", "MOATTKN-2", 1),
        text.replacen("MOATTKN-1-", "MOATTKN-", 1),
    ];
    for case in &cases {
        let err = parse_err(case);
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&secret), "{shown}");
        // Not even a 6-character piece of the secret field.
        for window in secret.as_bytes().windows(6) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!shown.contains(piece), "{piece} in {shown}");
        }
    }
}

// --- CA digest -----------------------------------------------------------

#[test]
fn ca_digest_is_sha256_of_the_bytes() {
    // SHA-256("abc"), FIPS 180-2 test vector.
    let d = CaDigest::of(b"abc");
    assert_eq!(
        d.to_string(),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(d.to_string().parse::<CaDigest>().unwrap(), d);
    assert_eq!(format!("{d:?}"), format!("CaDigest({d})"));
}

#[test]
fn ca_digest_parse_is_strict() {
    let good = CaDigest::of(BUNDLE).to_string();
    let bad = [
        good.to_uppercase(),
        good.replacen("sha256:", "sha512:", 1),
        good.trim_start_matches("sha256:").to_owned(),
        good[..good.len() - 1].to_owned(),
        format!("{good}0"),
        good.replacen("sha256:", "sha256:g", 1)[..good.len()].to_owned(),
        String::new(),
    ];
    for text in &bad {
        assert_eq!(
            text.parse::<CaDigest>(),
            Err(TokenError::InvalidCaDigest),
            "{text}"
        );
    }
}

// --- verify_ca -------------------------------------------------------------

#[test]
fn verify_ca_accepts_the_exact_bundle() {
    assert_eq!(token().verify_ca(BUNDLE), Ok(()));
}

#[test]
fn verify_ca_rejects_one_appended_byte() {
    let t = token();
    let mut bundle = BUNDLE.to_vec();
    bundle.push(b'\n');
    assert_eq!(
        t.verify_ca(&bundle),
        Err(TokenError::CaMismatch {
            expected: CaDigest::of(BUNDLE),
            found: CaDigest::of(&bundle),
        })
    );
}

#[test]
fn verify_ca_rejects_an_extra_root() {
    let t = token();
    let bundle = [BUNDLE, OTHER_ROOT].concat();
    let err = t.verify_ca(&bundle).unwrap_err();
    assert!(matches!(err, TokenError::CaMismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains("not part of the cluster"), "{msg}");
    assert!(msg.contains("Nothing secret was sent"), "{msg}");
    assert!(msg.contains(&CaDigest::of(BUNDLE).to_string()), "{msg}");
    assert!(msg.contains(&CaDigest::of(&bundle).to_string()), "{msg}");
    assert!(!msg.contains(&secret_field(&t.expose_secret())), "{msg}");
}

#[test]
fn verify_ca_rejects_a_different_bundle() {
    let t = token();
    assert!(matches!(
        t.verify_ca(OTHER_ROOT),
        Err(TokenError::CaMismatch { .. })
    ));
    assert!(matches!(
        t.verify_ca(b""),
        Err(TokenError::CaMismatch { .. })
    ));
}

// --- fingerprint -----------------------------------------------------------

#[test]
fn fingerprint_is_stable_and_distinct() {
    let a = token();
    let b = token();
    assert_eq!(a.fingerprint(), a.fingerprint());
    let reparsed: JoinToken = a.expose_secret().parse().unwrap();
    assert_eq!(reparsed.fingerprint(), a.fingerprint());
    assert_ne!(a.fingerprint(), b.fingerprint());
}

#[test]
fn fingerprint_covers_the_ca_digest() {
    let secret = [5u8; 16];
    let a = token_from(CaDigest::of(BUNDLE).as_bytes(), &secret);
    let b = token_from(CaDigest::of(OTHER_ROOT).as_bytes(), &secret);
    assert_ne!(a.fingerprint(), b.fingerprint());
}

#[test]
fn fingerprint_matches_its_definition() {
    let ca = CaDigest::of(BUNDLE);
    let secret = [0x42u8; 16];
    let t = token_from(ca.as_bytes(), &secret);
    let mut input = b"moat-token-fingerprint-v1\0".to_vec();
    input.extend_from_slice(&secret);
    input.extend_from_slice(ca.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let want = data_encoding::HEXLOWER.encode(&digest.as_ref()[..8]);
    assert_eq!(t.fingerprint().to_string(), want);
}

#[test]
fn fingerprint_text_form() {
    let fp = token().fingerprint();
    let text = fp.to_string();
    assert_eq!(text.len(), 16);
    assert!(text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(text.parse::<TokenFingerprint>().unwrap(), fp);
    assert_eq!(format!("{fp:?}"), format!("TokenFingerprint({text})"));
    for bad in [
        text.to_uppercase(),
        text[..15].to_owned(),
        format!("{text}0"),
        "zzzzzzzzzzzzzzzz".to_owned(),
    ] {
        // to_uppercase of an all-digit string is unchanged; skip that case.
        if bad == text {
            continue;
        }
        assert_eq!(
            bad.parse::<TokenFingerprint>(),
            Err(TokenError::InvalidFingerprint),
            "{bad}"
        );
    }
}

// --- matching ----------------------------------------------------------------

#[test]
fn match_role_picks_the_matching_token() {
    let worker = token();
    let manager = token();
    let stranger = token();
    let presented_w: JoinToken = worker.expose_secret().parse().unwrap();
    let presented_m: JoinToken = manager.expose_secret().parse().unwrap();
    assert_eq!(
        match_role(&presented_w, &worker, &manager),
        Some(Role::Worker)
    );
    assert_eq!(
        match_role(&presented_m, &worker, &manager),
        Some(Role::Manager)
    );
    assert_eq!(match_role(&stranger, &worker, &manager), None);
}

#[test]
fn match_role_needs_the_ca_digest_too() {
    // Same secret as the worker token, pinned to another CA: no match.
    let secret = [9u8; 16];
    let worker = token_from(CaDigest::of(BUNDLE).as_bytes(), &secret);
    let manager = token();
    let other_ca = token_from(CaDigest::of(OTHER_ROOT).as_bytes(), &secret);
    assert_eq!(match_role(&other_ca, &worker, &manager), None);
    assert!(!other_ca.ct_eq(&worker));
}

#[test]
fn match_role_prefers_worker_if_stored_tokens_are_equal() {
    let t = token();
    assert_eq!(match_role(&t, &t, &t.clone()), Some(Role::Worker));
}

#[test]
fn ct_eq_detects_a_one_bit_difference() {
    let ca = CaDigest::of(BUNDLE);
    let a = token_from(ca.as_bytes(), &[0u8; 16]);
    let mut s = [0u8; 16];
    s[15] = 1;
    let b = token_from(ca.as_bytes(), &s);
    assert!(a.ct_eq(&a.clone()));
    assert!(!a.ct_eq(&b));
}

// --- Debug, info, serde ------------------------------------------------------

#[test]
fn debug_hides_the_secret() {
    let t = token();
    let text = t.expose_secret();
    let secret = secret_field(&text);
    let dbg = format!("{t:?}");
    let pretty = format!("{t:#?}");
    for shown in [&dbg, &pretty] {
        assert!(!shown.contains(text.as_str()), "{shown}");
        assert!(!shown.contains(&secret), "{shown}");
        for window in secret.as_bytes().windows(6) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!shown.contains(piece), "{piece} in {shown}");
        }
    }
    assert_eq!(
        dbg,
        format!(
            "JoinToken {{ ca_digest: {}, fingerprint: {}, secret: \"…\" }}",
            t.ca_digest(),
            t.fingerprint()
        )
    );
}

#[test]
fn info_reports_public_facts_only() {
    let t = token();
    let info = t.info();
    assert_eq!(
        info,
        TokenInfo {
            version: 1,
            ca_digest: CaDigest::of(BUNDLE),
            fingerprint: t.fingerprint(),
            checksum_valid: true,
        }
    );
    let json = serde_json::to_string(&info).unwrap();
    assert_eq!(
        json,
        format!(
            r#"{{"version":1,"ca_digest":"{}","fingerprint":"{}","checksum_valid":true}}"#,
            t.ca_digest(),
            t.fingerprint()
        )
    );
    assert!(!json.contains(&secret_field(&t.expose_secret())));
}

#[test]
fn serde_writes_the_token_text() {
    let t = token();
    let json = serde_json::to_string(&t).unwrap();
    assert_eq!(json, format!("\"{}\"", t.expose_secret().as_str()));
    let back: JoinToken = serde_json::from_str(&json).unwrap();
    assert!(back.ct_eq(&t));
}

#[test]
fn serde_rejects_a_bad_token_with_the_parse_error() {
    let text = token().expose_secret();
    let json = format!("\"{}\"", &text[..text.len() - 1]);
    let err = serde_json::from_str::<JoinToken>(&json).unwrap_err();
    assert!(err.to_string().contains("copied completely"), "{err}");
    assert!(!err.to_string().contains(&secret_field(&text)), "{err}");
}

#[test]
fn serde_round_trips_digest_and_fingerprint() {
    let t = token();
    let d = *t.ca_digest();
    let fp = t.fingerprint();
    let dj = serde_json::to_string(&d).unwrap();
    let fj = serde_json::to_string(&fp).unwrap();
    assert_eq!(dj, format!("\"{d}\""));
    assert_eq!(fj, format!("\"{fp}\""));
    assert_eq!(serde_json::from_str::<CaDigest>(&dj).unwrap(), d);
    assert_eq!(serde_json::from_str::<TokenFingerprint>(&fj).unwrap(), fp);
    assert!(serde_json::from_str::<CaDigest>("\"sha256:00\"").is_err());
    assert!(serde_json::from_str::<TokenFingerprint>("\"00\"").is_err());
}

// --- properties --------------------------------------------------------------

proptest! {
    #[test]
    fn prop_round_trip(ca in proptest::array::uniform32(any::<u8>()), secret in proptest::array::uniform16(any::<u8>())) {
        let t = token_from(&ca, &secret);
        prop_assert_eq!(t.ca_digest().as_bytes(), &ca);
        let back: JoinToken = t.expose_secret().parse().unwrap();
        prop_assert!(back.ct_eq(&t));
        prop_assert_eq!(back.fingerprint(), t.fingerprint());
    }

    #[test]
    fn prop_parse_never_panics(s in "\\PC{0,120}") {
        let _ = s.parse::<JoinToken>();
        let _ = s.parse::<CaDigest>();
        let _ = s.parse::<TokenFingerprint>();
    }

    #[test]
    fn prop_token_shaped_input_never_panics(s in "MOATTKN-[0-9]{1,3}-[0-9a-zA-Z~é-]{0,100}") {
        let _ = s.parse::<JoinToken>();
    }

    #[test]
    fn prop_single_change_is_rejected(idx in 0usize..TOKEN_CHARS, c in "[0-9a-zA-Z-]") {
        let text = token_from(&[3; 32], &[4; 16]).expose_secret();
        let mut bytes = text.as_bytes().to_vec();
        let c = c.as_bytes()[0];
        prop_assume!(bytes[idx] != c);
        bytes[idx] = c;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(changed.parse::<JoinToken>().is_err());
    }

    #[test]
    fn prop_different_bundles_fail_verify(a in proptest::collection::vec(any::<u8>(), 0..200), b in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assume!(a != b);
        let t = JoinToken::generate(&a).unwrap();
        prop_assert_eq!(t.verify_ca(&a), Ok(()));
        let mismatch = matches!(t.verify_ca(&b), Err(TokenError::CaMismatch { .. }));
        prop_assert!(mismatch);
    }
}
