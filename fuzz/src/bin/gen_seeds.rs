//! Writes the seed corpora under `fuzz/seeds/<target>/` (not a fuzz target).
//!
//! Run once from the repository root, on stable:
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --features gen-seeds --bin gen_seeds
//! ```
//!
//! Every key, CA and token it creates is freshly generated and thrown away;
//! the only fixed key is the fuzz fixture [`moat_fuzz::FIXTURE_UNLOCK_KEY`].
//! Running it again replaces the seeds with equivalent new ones.

use std::fs;
use std::path::{Path, PathBuf};

use moat_fuzz::{FIXTURE_AAD, FIXTURE_UNLOCK_KEY, fixture_key};
use moat_lock::{KdfParams, KeySource, Passphrase, UnlockKey, seal, unseal};
use moat_pki::{
    CertExpiry, ClusterId, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role, RootCa,
    RootOptions, VerifiedCsr, inspect,
};
use moat_tokens::JoinToken;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<()> {
        let dir: PathBuf = seeds.join(target);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(name), bytes)?;
        Ok(())
    };

    // Certificates: a root per key algorithm, and worker/manager node
    // certificates, as DER and as a PEM chain. Same fixed time as the csr
    // target.
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000)?;
    let cluster = ClusterId::generate();
    let root = RootCa::generate(cluster, &RootOptions::default(), now)?;
    let ed_root = RootCa::generate(
        cluster,
        &RootOptions {
            algorithm: KeyAlgorithm::Ed25519,
            generation: 2,
            ..RootOptions::default()
        },
        now,
    )?;
    write("cert_inspect", "root-p256.der", root.certificate())?;
    write("cert_inspect", "root-ed25519.der", ed_root.certificate())?;

    // CSRs for both key algorithms; each also becomes a node certificate.
    for (algorithm, role) in [
        (KeyAlgorithm::EcdsaP256, Role::Worker),
        (KeyAlgorithm::Ed25519, Role::Manager),
    ] {
        let csr = PrivateKey::generate(algorithm)?.csr()?;
        VerifiedCsr::from_der(csr.as_ref())?;
        write("csr", &format!("{algorithm}.der"), csr.as_ref())?;

        let issued = root.sign_csr(
            csr.as_ref(),
            NodeId::generate(),
            role,
            CertExpiry::DEFAULT,
            now,
        )?;
        let name = format!("node-{}-{algorithm}", role.organizational_unit());
        write("cert_inspect", &format!("{name}.der"), issued.der.as_ref())?;
        let mut chain = pem(issued.der.as_ref());
        chain.push_str(&root.certificate_pem());
        assert_eq!(inspect(chain.as_bytes())?.len(), 2);
        write(
            "cert_inspect",
            &format!("{name}-chain.pem"),
            chain.as_bytes(),
        )?;
    }

    // Join tokens pinning the root bundle; one with surrounding whitespace.
    let token = JoinToken::generate(root.certificate_pem().as_bytes())?;
    let text = token.expose_secret();
    text.parse::<JoinToken>()?;
    write("token", "token.txt", text.as_bytes())?;
    write(
        "token",
        "token-padded.txt",
        format!("  {}\n", text.as_str()).as_bytes(),
    )?;

    // Unlock keys: the fixture and a fresh one.
    let fresh = UnlockKey::generate()?;
    let fixture_text = fixture_key().expose_for_operator();
    assert_eq!(
        fixture_text.as_str(),
        FIXTURE_UNLOCK_KEY,
        "fixture key is not canonical"
    );
    write("unlock_key", "fixture.txt", FIXTURE_UNLOCK_KEY.as_bytes())?;
    write(
        "unlock_key",
        "fresh.txt",
        fresh.expose_for_operator().as_bytes(),
    )?;

    // Sealed blobs: three sealed with the fixture key for the fixture AAD
    // (the sealed_blob target opens these), one with another key, and one
    // passphrase blob (header with argon2id parameters).
    let key = KeySource::Key(fixture_key());
    for (name, key_id, plaintext) in [
        ("fixture-empty.bin", 1, &b""[..]),
        ("fixture-short.bin", 2, &b"seed plaintext"[..]),
        ("fixture-32.bin", 7, &[0x42; 32][..]),
    ] {
        let blob = seal(key, key_id, &FIXTURE_AAD, plaintext)?;
        assert_eq!(
            unseal(key, &FIXTURE_AAD, &blob)?.plaintext.as_slice(),
            plaintext
        );
        write("sealed_blob", name, &blob)?;
    }
    write(
        "sealed_blob",
        "other-key.bin",
        &seal(KeySource::Key(&fresh), 3, &FIXTURE_AAD, b"other key")?,
    )?;
    let passphrase = Passphrase::new("fuzz seed passphrase".to_string().into())?;
    write(
        "sealed_blob",
        "passphrase.bin",
        &seal(
            KeySource::Passphrase(&passphrase, KdfParams::minimum()),
            4,
            &FIXTURE_AAD,
            b"passphrase",
        )?,
    )?;

    println!("seeds written to {}", seeds.display());
    Ok(())
}

/// DER certificate as PEM (the pki crate keeps its encoder private).
fn pem(der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
