//! moat's audit-verification benchmark.
//!
//! Builds an audit log of N records (default 1,000,000) as a cluster writes
//! them — `cert.renew` events of about 400 bytes with serial, role and
//! not_after details — with a tree head signed every 1,000 records and one
//! at the end by a manager certificate from a fresh cluster CA, and exports
//! it as a one-file bundle and as a directory bundle in a temporary
//! directory. Then it measures, in the same run, the median of R rounds
//! (the order of the operations rotates every round) of:
//!
//! * raw SHA-256 (`ring::digest`) over the records file, read into memory
//!   beforehand: the baseline;
//! * the Merkle floor: only the leaf hash of every record and the node
//!   hashes of the tree (what any RFC 6962 verifier must hash), over the
//!   same bytes in memory;
//! * `read_bundle` + `verify_bundle` in this process, for both layouts; the
//!   report must be ok;
//! * `moat audit verify BUNDLE --ca CA.pem` as a subprocess, for both
//!   layouts, process start and output included; exit code 0 required.
//!
//! MB/s are of the records bytes (1 MB = 10^6 bytes). The target is at
//! least 500 MB/s in process and through the CLI. Last, one byte of a
//! record is changed in a copy of the one-file bundle, and the CLI must
//! exit non-zero and name that record (not timed).
//!
//! `cargo build --release -p moat -p moat-bench && target/release/audit
//! [--quick] [--records N] [--rounds R] [--moat PATH] [--dir DIR]`.
//! `--moat` defaults to `target/release/moat`, else `target/debug/moat`.
//! `--quick` verifies 20,000 records (a smoke run for CI; figures not
//! meaningful).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Printing the table and its progress is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser as _;
use moat_audit::{
    Action, Actor, Bundle, Details, Event, Hash, HeadSigner, Layout, MerkleLog, Outcome,
    RECORDS_FILE, Text, Timestamp, empty_root, leaf_hash, node_hash, read_bundle, verify_bundle,
};
use moat_pki::{
    CertExpiry, ClusterId, KeyAlgorithm, NodeId, OffsetDateTime, PrivateKey, Role, RootCa,
    RootOptions, TrustRoots,
};
use ring::digest::{SHA256, digest};
use tempfile::TempDir;

/// A signed tree head every this many records (and one at the end).
const HEAD_EVERY: u64 = 1_000;
/// Distinct worker nodes renewing their certificates.
const WORKERS: usize = 5_000;
/// The log's records are spread over this many seconds (within the 24-hour
/// validity of the manager certificate that signs the heads).
const SPAN_SECS: u64 = 12 * 3600;
/// Target throughput of verification, MB/s.
const TARGET_MB_S: f64 = 500.0;

/// `moat audit verify` on a bundle of a million records, next to raw
/// SHA-256 over the same bytes.
#[derive(clap::Parser)]
#[command(name = "audit")]
struct Options {
    /// 20,000 records: a smoke run (CI); figures not meaningful.
    #[arg(long)]
    quick: bool,
    /// Records in the log [default: 1,000,000, or 20,000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    records: Option<u64>,
    /// Rounds of every measurement; the table shows the median.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// The moat CLI [default: the workspace's target/release/moat, else
    /// target/debug/moat].
    #[arg(long)]
    moat: Option<PathBuf>,
    /// Where the temporary bundles go [default: the system temporary
    /// directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let opts = Options::parse();
    let n = opts
        .records
        .unwrap_or(if opts.quick { 20_000 } else { 1_000_000 });
    let rounds = opts.rounds as usize;
    let dir = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let moat = moat_binary(opts.moat.as_deref())?;
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build of the benchmark: in-process figures are not meaningful"
        );
    }
    let started = Instant::now();
    eprintln!(
        "generating {} records with signed tree heads under {}",
        n,
        dir.display()
    );
    let fixture = Fixture::generate(n, &dir)?;
    let records = fs::read(fixture.directory.join(RECORDS_FILE))
        .context("reading the records file into memory")?;
    let lines = line_ranges(&records);
    ensure!(
        lines.len() as u64 == n,
        "the records file holds {} lines, not {}",
        lines.len(),
        n
    );
    let bundle_bytes = fs::metadata(&fixture.file)
        .context("reading the bundle's size")?
        .len();
    eprintln!(
        "bundle: {} records, {} signed tree heads, {:.1} MB as one file ({:.1} MB of records, \
         {:.0} bytes per record with its newline); generated in {:.1} s",
        n,
        fixture.heads,
        bundle_bytes as f64 / 1e6,
        records.len() as f64 / 1e6,
        records.len() as f64 / n as f64,
        started.elapsed().as_secs_f64()
    );

    let bench = Bench {
        fixture: &fixture,
        moat: &moat,
        records: &records,
        lines: &lines,
    };
    let ops = Op::ALL;
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); ops.len()];
    for round in 0..rounds {
        eprintln!("round {}/{}", round + 1, rounds);
        for k in 0..ops.len() {
            let i = (k + round) % ops.len();
            times[i].push(bench.time(ops[i]).with_context(|| ops[i].name())?);
        }
    }
    let tamper = bench.tamper()?;

    let bytes = records.len() as f64;
    let medians: Vec<Duration> = times.iter_mut().map(|t| median(t)).collect();
    let raw = bytes / medians[0].as_secs_f64();
    println!();
    println!("| operation | MB/s | records/s | vs SHA-256 | target ≥ {TARGET_MB_S:.0} MB/s |");
    println!("|---|---:|---:|---:|---|");
    for (op, t) in ops.iter().zip(&medians) {
        let rate = bytes / t.as_secs_f64();
        let target = match (op.targeted(), rate >= TARGET_MB_S * 1e6) {
            (false, _) => "",
            (true, true) => "PASS",
            (true, false) => "BELOW TARGET",
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.0} % | {target} |",
            op.name(),
            rate / 1e6,
            n as f64 / t.as_secs_f64(),
            100.0 * rate / raw
        );
    }
    println!();
    println!(
        "{} records ({:.1} MB of records, {:.1} MB bundle), {} signed tree heads; \
         median of {} round(s); MB = 10^6 bytes of records",
        n,
        bytes / 1e6,
        bundle_bytes as f64 / 1e6,
        fixture.heads,
        rounds
    );
    println!("moat binary: {}", moat.display());
    println!("{tamper}");
    if opts.quick {
        println!("(--quick: a small log, figures are only a smoke test)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The log

/// The exported log on disk.
struct Fixture {
    /// Holds everything below; removed when dropped.
    _dir: TempDir,
    /// The one-file bundle.
    file: PathBuf,
    /// The directory bundle.
    directory: PathBuf,
    /// The auditor's copy of the cluster CA certificate.
    ca: PathBuf,
    ca_pem: String,
    heads: usize,
    /// The root of the whole log, as the last head signed it.
    root: Hash,
}

impl Fixture {
    fn generate(n: u64, base: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("moat-bench-audit-")
            .tempdir_in(base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        let now = OffsetDateTime::now_utc();
        let ca = RootCa::generate(ClusterId::generate(), &RootOptions::default(), now)
            .context("root CA")?;
        let roots = TrustRoots::new(vec![ca.certificate().clone()]).context("trust roots")?;
        let (manager, key) = (
            NodeId::generate(),
            PrivateKey::generate(KeyAlgorithm::EcdsaP256)?,
        );
        let cert = ca
            .sign_csr(
                key.csr()?.as_ref(),
                manager,
                Role::Manager,
                CertExpiry::DEFAULT,
                now,
            )
            .context("manager certificate")?;
        let chain = [cert.der];
        let signer = HeadSigner::new(&key, &chain, &roots, now).context("head signer")?;

        let workers: Vec<NodeId> = (0..WORKERS).map(|_| NodeId::generate()).collect();
        let start = now.unix_timestamp();
        let mut log = MerkleLog::new();
        let mut bundle = Bundle::new(ca.certificate_pem(), Vec::new());
        for seq in 1..=n {
            let time = Timestamp::from_unix(start + (seq * SPAN_SECS / n) as i64)?;
            let worker = workers[seq as usize % WORKERS];
            let record = log.seal(time, renewal(manager, worker, seq, time)?);
            let line = record.to_line();
            log.push_leaf(&line);
            bundle.push_record(&line)?;
            if seq.is_multiple_of(HEAD_EVERY) || seq == n {
                let head = signer.sign(seq, log.current_root(), time)?;
                bundle.heads.push(head);
            }
        }

        let file = dir.path().join("audit.bundle");
        bundle.write(&file, Layout::File)?;
        let directory = dir.path().join("audit-bundle");
        bundle.write(&directory, Layout::Directory)?;
        let ca_path = dir.path().join("ca.pem");
        fs::write(&ca_path, &bundle.ca_pem)
            .with_context(|| format!("writing {}", ca_path.display()))?;
        Ok(Self {
            _dir: dir,
            file,
            directory,
            ca: ca_path,
            ca_pem: bundle.ca_pem,
            heads: bundle.heads.len(),
            root: log.current_root(),
        })
    }

    fn bundle(&self, layout: Layout) -> &Path {
        match layout {
            Layout::File => &self.file,
            Layout::Directory => &self.directory,
        }
    }
}

/// Worker `worker`'s certificate renewal, as manager `manager` records it
/// (the details of `moat-node`'s renew call but the issuer fingerprint):
/// mostly granted, now and then denied.
fn renewal(manager: NodeId, worker: NodeId, seq: u64, time: Timestamp) -> Result<Event> {
    let mut details = Details::new();
    let serial = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    details.insert(
        "not_after",
        &Timestamp::from_unix(time.unix_seconds() + 24 * 3600)?.to_string(),
    )?;
    details.insert(
        "role",
        if seq.is_multiple_of(10) {
            "manager"
        } else {
            "worker"
        },
    )?;
    details.insert("serial", &format!("{serial:016x}{:016x}", !serial))?;
    Ok(Event {
        node: manager,
        actor: Actor::node(worker),
        action: Action::CERT_RENEW,
        target: Text::new("target", &format!("node:{worker}"))?,
        outcome: if seq.is_multiple_of(97) {
            Outcome::denied("the certificate signing request is not for the node's key")?
        } else {
            Outcome::Success
        },
        details,
    })
}

/// Where each line of `records` lies, without its newline.
fn line_ranges(records: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in records.iter().enumerate() {
        if b == b'\n' {
            out.push(start..i);
            start = i + 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Measurement

/// One measured operation.
#[derive(Clone, Copy)]
enum Op {
    Sha256,
    MerkleFloor,
    InProcess(Layout),
    Cli(Layout),
}

impl Op {
    /// In table order; the first is the baseline.
    const ALL: [Op; 6] = [
        Op::Sha256,
        Op::MerkleFloor,
        Op::InProcess(Layout::File),
        Op::InProcess(Layout::Directory),
        Op::Cli(Layout::File),
        Op::Cli(Layout::Directory),
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Sha256 => "SHA-256 over the records (ring, raw)",
            Op::MerkleFloor => "leaf + node hashes only (Merkle floor)",
            Op::InProcess(Layout::File) => "verify_bundle, one file (in process)",
            Op::InProcess(Layout::Directory) => "verify_bundle, directory (in process)",
            Op::Cli(Layout::File) => "moat audit verify, one file (CLI)",
            Op::Cli(Layout::Directory) => "moat audit verify, directory (CLI)",
        }
    }

    fn targeted(self) -> bool {
        matches!(self, Op::InProcess(_) | Op::Cli(_))
    }
}

/// What the operations run on.
struct Bench<'a> {
    fixture: &'a Fixture,
    moat: &'a Path,
    /// The records file, in memory.
    records: &'a [u8],
    lines: &'a [Range<usize>],
}

impl Bench<'_> {
    /// Runs `op` once and returns how long it took; fails if it did not
    /// verify.
    fn time(&self, op: Op) -> Result<Duration> {
        let f = self.fixture;
        let start = Instant::now();
        match op {
            Op::Sha256 => {
                black_box(digest(&SHA256, black_box(self.records)));
            }
            Op::MerkleFloor => {
                let root = merkle_root(self.records, self.lines);
                let elapsed = start.elapsed();
                ensure!(root == f.root, "the recomputed root is not the signed one");
                return Ok(elapsed);
            }
            Op::InProcess(layout) => {
                let path = f.bundle(layout);
                let bundle =
                    read_bundle(path).with_context(|| format!("reading {}", path.display()))?;
                let report = verify_bundle(&bundle, f.ca_pem.as_bytes(), None);
                let elapsed = start.elapsed();
                ensure!(report.ok(), "{} does not verify: {report}", path.display());
                return Ok(elapsed);
            }
            Op::Cli(layout) => {
                let out = self.cli_verify(f.bundle(layout))?;
                let elapsed = start.elapsed();
                ensure!(out.status.success(), "{}", failure(&out));
                return Ok(elapsed);
            }
        }
        Ok(start.elapsed())
    }

    /// `moat audit verify BUNDLE --ca CA.pem`.
    fn cli_verify(&self, bundle: &Path) -> Result<Output> {
        Process::new(self.moat)
            .args(["audit", "verify"])
            .arg(bundle)
            .arg("--ca")
            .arg(&self.fixture.ca)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.moat.display()))
    }

    /// Changes one hex digit of a record's serial in a copy of the one-file
    /// bundle and checks that the CLI refuses it and names the record.
    fn tamper(&self) -> Result<String> {
        let seq = self.lines.len() / 2 + 1;
        let line = &self.lines[seq - 1];
        let marker = b"\"serial\":\"";
        let at = self.records[line.clone()]
            .windows(marker.len())
            .position(|w| w == marker)
            .context("a record without a serial")?
            + line.start
            + marker.len();
        let was = self.records[at];
        let now = if was == b'0' { b'1' } else { b'0' };

        let f = self.fixture;
        let copy = f.file.with_extension("tampered");
        fs::copy(&f.file, &copy).with_context(|| format!("copying {}", f.file.display()))?;
        let header = fs::metadata(&copy)?.len() - self.records.len() as u64;
        let mut file = OpenOptions::new()
            .write(true)
            .open(&copy)
            .with_context(|| format!("opening {}", copy.display()))?;
        file.seek(SeekFrom::Start(header + at as u64))?;
        file.write_all(&[now])?;
        drop(file);

        let out = self.cli_verify(&copy)?;
        fs::remove_file(&copy).with_context(|| format!("removing {}", copy.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let needle = format!("record {seq} was altered");
        ensure!(
            !out.status.success(),
            "a bundle with a changed byte in record {seq} verified"
        );
        let said = text
            .lines()
            .find(|l| l.contains(&needle))
            .with_context(|| format!("the CLI did not name record {seq}:\n{text}"))?;
        Ok(format!(
            "tamper check: one byte of record {seq} changed ('{}' -> '{}'): moat audit verify \
             exited with code {} and said: {}",
            was as char,
            now as char,
            out.status.code().map_or("none".into(), |c| c.to_string()),
            said.split_whitespace().collect::<Vec<_>>().join(" ")
        ))
    }
}

/// The root of the RFC 6962 tree over `lines` of `records`: nothing but
/// the hashes every verifier must compute.
fn merkle_root(records: &[u8], lines: &[Range<usize>]) -> Hash {
    let mut frontier: Vec<Hash> = Vec::with_capacity(64);
    for (size, line) in lines.iter().enumerate() {
        let mut h = leaf_hash(&records[line.clone()]);
        let mut s = size;
        while s & 1 == 1 {
            let Some(left) = frontier.pop() else { break };
            h = node_hash(&left, &h);
            s >>= 1;
        }
        frontier.push(h);
    }
    let mut it = frontier.iter().rev();
    let last = it.next().copied().unwrap_or_else(empty_root);
    it.fold(last, |r, left| node_hash(left, &r))
}

/// The middle value (the upper one of an even count).
fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn failure(out: &Output) -> String {
    format!(
        "moat audit verify exited with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The moat CLI to run: `--moat`, else the workspace's release build, else
/// its debug build (with a warning).
fn moat_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        ensure!(path.is_file(), "--moat {}: no such file", path.display());
        return Ok(path.to_path_buf());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?;
    let release = workspace.join("target/release/moat");
    if release.is_file() {
        return Ok(release);
    }
    let debug = workspace.join("target/debug/moat");
    if debug.is_file() {
        eprintln!(
            "warning: {} not found, using {}: the CLI figures are those of a debug build",
            release.display(),
            debug.display()
        );
        return Ok(debug);
    }
    bail!(
        "no moat binary in {}: build it with `cargo build --release -p moat`, or pass --moat PATH",
        workspace.join("target").display()
    )
}
