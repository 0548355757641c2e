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
#![deny(missing_docs)]

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
fn rate(budget: Duration, op: &mut impl FnMut()) -> f64 {
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

/// Measures `moat` and `raw` in alternating rounds (so both see the same
/// machine conditions) and returns the best rate of each, in ops/s.
fn compare(budget: Duration, mut moat: impl FnMut(), mut raw: impl FnMut()) -> (f64, f64) {
    const ROUNDS: u32 = 5;
    for _ in 0..3 {
        moat();
        raw();
    }
    let (mut best_moat, mut best_raw) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        best_raw = best_raw.max(rate(budget / ROUNDS, &mut raw));
        best_moat = best_moat.max(rate(budget / ROUNDS, &mut moat));
    }
    (best_moat, best_raw)
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
    let (moat, raw) = compare(
        budget,
        || {
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
        },
        || {
            public
                .verify(black_box(&msg), sig.as_ref())
                .expect("verify");
            black_box(pair.sign(&rng, black_box(&msg)).expect("sign"));
        },
    );
    table.row(
        "certificate issuance (CSR verify + sign)",
        "ops/s",
        moat,
        "P-256 verify + sign (ring)",
        raw,
    );
}

/// Raw AES-256-GCM over a buffer of one size: the baseline for sealing.
struct RawAes {
    cipher: Aes256Gcm,
    data: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: aes_gcm::Tag,
    buf: Vec<u8>,
}

impl RawAes {
    const NONCE: [u8; 12] = [1; 12];

    fn new(size: usize) -> Self {
        let cipher = Aes256Gcm::new_from_slice(&[9u8; 32]).expect("aes key");
        let data = vec![7u8; size];
        let mut ciphertext = data.clone();
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(&Self::NONCE), b"aad", &mut ciphertext)
            .expect("encrypt");
        Self {
            cipher,
            buf: data.clone(),
            data,
            ciphertext,
            tag,
        }
    }

    fn encrypt(&mut self) {
        self.buf.copy_from_slice(&self.data);
        let tag = self
            .cipher
            .encrypt_in_place_detached(Nonce::from_slice(&Self::NONCE), b"aad", &mut self.buf)
            .expect("encrypt");
        black_box(tag);
    }

    fn decrypt(&mut self) {
        self.buf.copy_from_slice(&self.ciphertext);
        self.cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&Self::NONCE),
                b"aad",
                &mut self.buf,
                &self.tag,
            )
            .expect("decrypt");
    }
}

fn mib(size: usize) -> f64 {
    size as f64 / (1 << 20) as f64
}

fn sealing(table: &mut Table, budget: Duration, size: usize) {
    let key = UnlockKey::generate().expect("key");
    let aad = Aad::new("bench", "cluster", "node");
    let data = vec![7u8; size];
    let mut raw = RawAes::new(size);
    let (seal, raw_seal) = compare(
        budget,
        || {
            black_box(
                moat_lock::seal(KeySource::Key(&key), 1, &aad, black_box(&data)).expect("seal"),
            );
        },
        || raw.encrypt(),
    );
    let blob = moat_lock::seal(KeySource::Key(&key), 1, &aad, &data).expect("seal");
    let (open, raw_open) = compare(
        budget,
        || {
            black_box(
                moat_lock::unseal(KeySource::Key(&key), &aad, black_box(&blob)).expect("unseal"),
            );
        },
        || raw.decrypt(),
    );
    let label = human_size(size);
    let m = mib(size);
    table.row(
        &format!("seal {label}"),
        "MB/s",
        seal * m,
        "AES-256-GCM encrypt",
        raw_seal * m,
    );
    table.row(
        &format!("unseal {label}"),
        "MB/s",
        open * m,
        "AES-256-GCM decrypt",
        raw_open * m,
    );
}

fn records(table: &mut Table, budget: Duration, size: usize) {
    let dek = Dek::generate(DekVersion(1)).expect("dek");
    let data = vec![3u8; size];
    let mut raw = RawAes::new(size);
    let (seal, raw_seal) = compare(
        budget,
        || {
            black_box(
                dek.seal_record(b"log/1/1", black_box(&data))
                    .expect("seal record"),
            );
        },
        || raw.encrypt(),
    );
    let record = dek.seal_record(b"log/1/1", &data).expect("seal record");
    let set = DekSet::new(dek);
    let (open, raw_open) = compare(
        budget,
        || {
            black_box(
                set.open_record(b"log/1/1", black_box(&record))
                    .expect("open record"),
            );
        },
        || raw.decrypt(),
    );
    let label = human_size(size);
    let m = mib(size);
    table.row(
        &format!("DEK record seal {label}"),
        "MB/s",
        seal * m,
        "AES-256-GCM encrypt",
        raw_seal * m,
    );
    table.row(
        &format!("DEK record open {label}"),
        "MB/s",
        open * m,
        "AES-256-GCM decrypt",
        raw_open * m,
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
