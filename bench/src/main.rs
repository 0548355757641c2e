//! moat's benchmark table.
//!
//! Each moat operation is measured next to the raw primitive it is built
//! on, in the same process and run, on one core, and reported as a ratio:
//!
//! * certificate issuance (`RootCa::sign_csr`: parse the CSR, verify its
//!   signature, build and sign the certificate) against one raw ECDSA P-256
//!   verify plus one sign with ring, the library doing the work underneath;
//! * sealing and unsealing (`moat_lock::seal`/`unseal`: header, HKDF key
//!   schedule, key-check value, AES-256-GCM) against raw AES-256-GCM
//!   encryption/decryption of the same bytes;
//! * DEK record sealing (`Dek::seal_record`/`DekSet::open_record`, the raft
//!   log's per-record encryption) against raw AES-256-GCM.
//!
//! `cargo run --release -p moat-bench` prints the table; `--quick` runs each
//! line briefly (a smoke run for CI, figures not meaningful).

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use moat_lock::{Aad, Dek, DekSet, DekVersion, KeySource, UnlockKey};
use moat_pki::{
    CertExpiry, ClusterId, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role, RootCa,
    RootOptions,
};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(2)
    };
    let mut table = Table::default();
    issuance(&mut table, budget);
    for size in [4 << 10, 64 << 10, 1 << 20] {
        sealing(&mut table, budget, size);
    }
    records(&mut table, budget, 4 << 10);
    table.print(quick);
}

/// Runs `op` repeatedly for about `budget` and returns operations per second.
fn rate(budget: Duration, mut op: impl FnMut()) -> f64 {
    // Warm up caches and lazy initialisation.
    for _ in 0..3 {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..8 {
            op();
        }
        n += 8;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn issuance(table: &mut Table, budget: Duration) {
    let now = OffsetDateTime::now_utc();
    let ca =
        RootCa::generate(ClusterId::generate(), &RootOptions::default(), now).expect("root CA");
    let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).expect("node key");
    let csr = key.csr().expect("csr");
    let node = NodeId::generate();

    // The raw bound: one P-256 verify and one P-256 sign over a message the
    // size of a to-be-signed certificate.
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("pkcs8");
    let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("key pair");
    let msg = vec![0x5au8; 400];
    let sig = pair.sign(&rng, &msg).expect("sign");
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        pair.public_key().as_ref().to_vec(),
    );
    let raw = rate(budget, || {
        public
            .verify(black_box(&msg), sig.as_ref())
            .expect("verify");
        black_box(pair.sign(&rng, black_box(&msg)).expect("sign"));
    });
    let moat = rate(budget, || {
        black_box(
            ca.sign_csr(
                black_box(csr.as_ref()),
                node,
                Role::Worker,
                CertExpiry::DEFAULT,
                now,
            )
            .expect("issue"),
        );
    });
    table.row(
        "certificate issuance (CSR verify + sign)",
        "ops/s",
        moat,
        "P-256 verify + sign (ring)",
        raw,
    );
}

/// Raw AES-256-GCM encryption and decryption rates of `size` bytes, MB/s.
fn raw_aes(budget: Duration, size: usize) -> (f64, f64) {
    let data = vec![7u8; size];
    let mb = size as f64 / (1 << 20) as f64;
    let cipher = Aes256Gcm::new_from_slice(&[9u8; 32]).expect("aes key");
    let nonce = Nonce::from_slice(&[1u8; 12]);
    let mut buf = data.clone();
    let encrypt = rate(budget, || {
        buf.copy_from_slice(&data);
        black_box(
            cipher
                .encrypt_in_place_detached(nonce, b"aad", &mut buf)
                .expect("encrypt"),
        );
    }) * mb;
    let mut ct = data.clone();
    let tag = cipher
        .encrypt_in_place_detached(nonce, b"aad", &mut ct)
        .expect("encrypt");
    let decrypt = rate(budget, || {
        buf.copy_from_slice(&ct);
        cipher
            .decrypt_in_place_detached(nonce, b"aad", &mut buf, &tag)
            .expect("decrypt");
    }) * mb;
    (encrypt, decrypt)
}

fn sealing(table: &mut Table, budget: Duration, size: usize) {
    let key = UnlockKey::generate().expect("key");
    let aad = Aad::new("bench", "cluster", "node");
    let data = vec![7u8; size];
    let mb = size as f64 / (1 << 20) as f64;
    let (raw_seal, raw_open) = raw_aes(budget, size);
    let moat_seal = rate(budget, || {
        black_box(moat_lock::seal(KeySource::Key(&key), 1, &aad, black_box(&data)).expect("seal"));
    }) * mb;
    let blob = moat_lock::seal(KeySource::Key(&key), 1, &aad, &data).expect("seal");
    let moat_open = rate(budget, || {
        black_box(moat_lock::unseal(KeySource::Key(&key), &aad, black_box(&blob)).expect("unseal"));
    }) * mb;
    let label = human_size(size);
    table.row(
        &format!("seal {label}"),
        "MB/s",
        moat_seal,
        "AES-256-GCM encrypt",
        raw_seal,
    );
    table.row(
        &format!("unseal {label}"),
        "MB/s",
        moat_open,
        "AES-256-GCM decrypt",
        raw_open,
    );
}

fn records(table: &mut Table, budget: Duration, size: usize) {
    let dek = Dek::generate(DekVersion(1)).expect("dek");
    let data = vec![3u8; size];
    let mb = size as f64 / (1 << 20) as f64;
    let (raw_seal, raw_open) = raw_aes(budget, size);
    let moat_seal = rate(budget, || {
        black_box(
            dek.seal_record(b"log/1/1", black_box(&data))
                .expect("seal record"),
        );
    }) * mb;
    let record = dek.seal_record(b"log/1/1", &data).expect("seal record");
    let set = DekSet::new(dek);
    let moat_open = rate(budget, || {
        black_box(
            set.open_record(b"log/1/1", black_box(&record))
                .expect("open record"),
        );
    }) * mb;
    let label = human_size(size);
    table.row(
        &format!("DEK record seal {label}"),
        "MB/s",
        moat_seal,
        "AES-256-GCM encrypt",
        raw_seal,
    );
    table.row(
        &format!("DEK record open {label}"),
        "MB/s",
        moat_open,
        "AES-256-GCM decrypt",
        raw_open,
    );
}

fn human_size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

#[derive(Default)]
struct Table {
    rows: Vec<(String, &'static str, f64, String, f64)>,
}

impl Table {
    fn row(&mut self, what: &str, unit: &'static str, moat: f64, baseline: &str, raw: f64) {
        self.rows
            .push((what.to_string(), unit, moat, baseline.to_string(), raw));
    }

    #[allow(clippy::print_stdout)] // printing the table is this program's job
    fn print(&self, quick: bool) {
        println!(
            "{:<42} {:>12} {:<28} {:>12} {:>7}",
            "moat operation", "moat", "baseline (same run)", "baseline", "ratio"
        );
        for (what, unit, moat, baseline, raw) in &self.rows {
            println!(
                "{:<42} {:>12} {:<28} {:>12} {:>6.0}%",
                what,
                format!("{moat:.0} {unit}"),
                baseline,
                format!("{raw:.0} {unit}"),
                100.0 * moat / raw
            );
        }
        if quick {
            println!("(--quick: short runs, figures are only a smoke test)");
        }
    }
}
