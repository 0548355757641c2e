//! moat's Docker Swarm dump benchmark.
//!
//! Builds a synthetic but format-faithful Docker Swarm manager state
//! directory in a temporary directory: the certificates and node key of the
//! committed `swarm/tests/fixtures/unlocked` copy (autolock off, so its raft
//! data key is in clear in the `raft-dek` header), and a WAL of N raft
//! entries (default 100,000) written as etcd's `wal` package and SwarmKit
//! write it (`shared/DOCKER-SWARM-FORMAT.md` §6):
//!
//! * frames of a u64 LE length with the padding bits, then a `walpb.Record`
//!   {type, crc, data}, then zero padding to 8 bytes; the CRC-32C chained
//!   over every record's data across segments;
//! * a fresh WAL's crc(0), metadata (the fixture's `RaftMember`) and
//!   snapshot{0, 0} records, then each raft entry followed by the
//!   `HardState` a single manager saves with it; entry 1 is the ConfChange
//!   adding the manager (term 1), entry 2 the new leader's no-op (term 2),
//!   then `InternalRaftRequest`s: the cluster object, nodes, the ingress
//!   network, a secret, services, then rolling updates of every service's
//!   tasks (create, assign, run, shut the old one down, remove the oldest
//!   beyond the history of 5), with a node update now and then;
//! * every entry's data a `MaybeEncryptedRecord` {SECRETBOX, tag‖ciphertext,
//!   random 24-byte nonce} sealed with `crypto_secretbox` under the
//!   fixture's data key (the leader's no-op too, as SwarmKit does);
//! * segments `%016x-%016x.wal` cut once a save takes one past 64,000,000
//!   bytes (the full segment is truncated where its data ends, the next
//!   starts with crc(running CRC), metadata, state), the last one
//!   preallocated to 64,000,000 bytes (a sparse zero tail).
//!
//! `moat_swarm::verify` must accept the directory (every CRC matches and
//! every record authenticates) and the rebuilt store must hold what was
//! written before anything is timed. Then, in one run, best of R rounds
//! (the order rotates every round; each operation runs once untimed first,
//! so all read from a warm page cache):
//!
//! * the raw read of the WAL data: each segment's bytes up to the end of
//!   its records, and the three certificate files, into memory: the
//!   baseline (the I/O floor of any reader);
//! * the raw read of the whole files (`std::fs::read`, the preallocated
//!   zero tail included);
//! * parts, in memory: `moat_swarm::wal::parse_segment` over the segments'
//!   data (framing and the CRC-32C chain); `crypto_secretbox` opening every
//!   entry (the crypto floor); `Store::rebuild` from a decrypted log;
//! * `moat_swarm::raftlog::read_log` with the data keys (opened
//!   beforehand): read, CRC-32C chain, decrypt every entry;
//! * `moat_swarm::open`: the same plus the store rebuilt (and the join-token
//!   history the compliance report uses);
//! * the full dump: `moat_swarm::open`, `moat_swarm::dump_store` (redacted)
//!   and the JSON serialized as the CLI prints it (pretty, into a `Vec`);
//! * `moat store dump --docker-swarm DIR --format json` as a subprocess
//!   (stdout to /dev/null), if a moat binary is found.
//!
//! MB/s are of the WAL data bytes (1 MB = 10^6 bytes) for every row, so the
//! ratios to the raw read are ratios of times.
//!
//! `cargo build --release -p moat-bench --bin swarm_dump && target/release/swarm_dump
//! [--quick] [--entries N] [--rounds R] [--moat PATH] [--no-cli] [--dir DIR]
//! [--json]`. `--quick`: 10,000 entries, one round (a smoke run for CI;
//! figures not meaningful). `--json`: the last line of the output is a
//! JSON object of the figures.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Printing the table and its progress is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::hint::black_box;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use moat_swarm::dir::{NODE_CERT_FILE, ROOT_CA_FILE, StateDir, WAL_DIR};
use moat_swarm::key::{DataKeys, NODE_KEY_FILE};
use moat_swarm::proto::{
    Annotations, CaConfig, Certificate, Cluster, ClusterSpec, ConfChange, ContainerSpec,
    DispatcherConfig, Driver, Duration as PbDuration, EncryptionConfig, EncryptionKey,
    EngineDescription, InternalRaftRequest, IssuanceStatus, JoinTokens, ManagerStatus, Meta,
    Network, NetworkSpec, Node, NodeDescription, NodeSpec, NodeStatus, NodeTlsInfo,
    OrchestrationConfig, Platform, RaftConfig, RaftMember, ReplicatedService, RootCa, Secret,
    SecretReference, SecretSpec, Service, ServiceMode, ServiceSpec, StoreAction, StoreTarget, Task,
    TaskRuntime, TaskSpec, TaskStatus, Timestamp, Version, conf_change_type, node_role,
    store_action_kind, task_state,
};
use moat_swarm::store::ObjectKind;
use moat_swarm::wal::WalRecordKind;
use prost::Message as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use tempfile::TempDir;

/// etcd's `SegmentSizeBytes`: a segment is cut once a save takes it past
/// this, and a new one is preallocated to it.
const SEGMENT_SIZE: u64 = 64_000_000;
/// The committed state directory whose certificates and keys are used.
const FIXTURE: &str = "swarm/tests/fixtures/unlocked";
/// Worker nodes (plus the manager).
const WORKERS: usize = 9;
/// Services, each with [`REPLICAS`] replicas.
const SERVICES: usize = 20;
/// Replicas per service.
const REPLICAS: usize = 10;
/// Tasks kept per slot (SwarmKit's default `task_history_retention_limit`).
const HISTORY: usize = 5;
/// The first entry's time (2025-11-24) and seconds between entries.
const EPOCH: i64 = 1_764_000_000;

/// walpb record types.
const METADATA: u64 = 1;
const ENTRY: u64 = 2;
const STATE: u64 = 3;
const CRC: u64 = 4;
const SNAPSHOT: u64 = 5;

/// TaskState values not named in `moat_swarm::proto::task_state`.
const PENDING: i32 = 64;
const ASSIGNED: i32 = 192;

/// `moat store dump --docker-swarm` on a WAL of 100,000 entries, next to the
/// raw read of the same files.
#[derive(clap::Parser)]
#[command(name = "swarm_dump")]
struct Options {
    /// 10,000 entries, one round: a smoke run (CI); figures not meaningful.
    #[arg(long)]
    quick: bool,
    /// Raft entries in the WAL [default: 100,000, or 10,000 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u64).range(300..))]
    entries: Option<u64>,
    /// Rounds of every measurement; the table shows the best [default: 3,
    /// or 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: Option<u32>,
    /// The moat CLI [default: the workspace's target/release/moat; the CLI
    /// row is skipped if there is none].
    #[arg(long)]
    moat: Option<PathBuf>,
    /// Skip the CLI row.
    #[arg(long)]
    no_cli: bool,
    /// Where the temporary state directory goes [default: the system
    /// temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the figures as a JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Also time the raw read, the in-process dump and the CLI with a cold
    /// page cache (`sync`, then 3 into /proc/sys/vm/drop_caches before
    /// each run; needs root): what an auditor's first run on a copy costs.
    #[arg(long)]
    cold: bool,
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let opts = Options::parse();
    let n = opts
        .entries
        .unwrap_or(if opts.quick { 10_000 } else { 100_000 });
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 }) as usize;
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?
        .to_path_buf();
    let moat = if opts.no_cli {
        None
    } else {
        moat_binary(&workspace, opts.moat.as_deref())?
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build of the benchmark: figures are not meaningful");
    }

    let started = Instant::now();
    eprintln!(
        "generating a state directory with {n} raft entries under {}",
        base.display()
    );
    let fx = Fixture::generate(n, &workspace.join(FIXTURE), &base)?;
    eprintln!(
        "WAL: {} entries, {} records, {} segment(s), {:.1} MB of data ({:.0} bytes per entry; \
         plaintexts {:.0} bytes on average), {:.1} MB of files; generated in {:.1} s",
        n,
        fx.records,
        fx.segments.len(),
        fx.wal_bytes as f64 / 1e6,
        fx.wal_bytes as f64 / n as f64,
        fx.plaintext_bytes as f64 / n as f64,
        fx.file_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let checked = fx.check()?;
    eprintln!("{checked}");

    let bench = Bench::new(&fx, moat.as_deref())?;
    let ops: Vec<Op> = Op::ALL
        .into_iter()
        .filter(|op| !matches!(op, Op::Cli) || bench.moat.is_some())
        .collect();
    eprintln!("warming up (every operation once, untimed)");
    let mut phases = Phases::default();
    for &op in &ops {
        bench.time(op, &mut phases).with_context(|| op.name())?;
    }
    let mut best: Vec<Duration> = vec![Duration::MAX; ops.len()];
    let mut best_phases = Phases::default();
    for round in 0..rounds {
        eprintln!("round {}/{}", round + 1, rounds);
        for k in 0..ops.len() {
            let i = (k + round) % ops.len();
            let mut p = Phases::default();
            let t = bench.time(ops[i], &mut p).with_context(|| ops[i].name())?;
            if t < best[i] {
                best[i] = t;
                if matches!(ops[i], Op::Dump) {
                    best_phases = p;
                }
            }
        }
    }

    let bytes = fx.wal_bytes as f64;
    let raw = best[0].as_secs_f64();
    println!();
    println!("| operation | s | entries/s | MB/s | × raw read |");
    println!("|---|---:|---:|---:|---:|");
    for (op, t) in ops.iter().zip(&best) {
        let s = t.as_secs_f64();
        println!(
            "| {} | {:.3} | {:.0} | {:.0} | {:.1} |",
            op.name(),
            s,
            n as f64 / s,
            bytes / s / 1e6,
            s / raw
        );
        if matches!(op, Op::Dump) {
            for (name, d) in best_phases.rows() {
                println!(
                    "| … of which {name} | {:.3} | | | {:.1} |",
                    d.as_secs_f64(),
                    d.as_secs_f64() / raw
                );
            }
        }
    }
    println!();
    println!(
        "{} entries ({:.0} bytes of plaintext each on average), {:.1} MB of WAL data in {} \
         segment(s) ({:.1} MB of files with the preallocated tail); best of {} round(s), warm \
         page cache; MB = 10^6 bytes of WAL data; × raw read = time over the raw read of the \
         WAL data",
        n,
        fx.plaintext_bytes as f64 / n as f64,
        bytes / 1e6,
        fx.segments.len(),
        fx.file_bytes as f64 / 1e6,
        rounds
    );
    let mut cold: Vec<(Op, Duration)> = Vec::new();
    if opts.cold {
        eprintln!("cold page cache: dropping the caches before each run");
        for &op in ops
            .iter()
            .filter(|op| matches!(op, Op::RawData | Op::Dump | Op::Cli))
        {
            let mut best = Duration::MAX;
            for _ in 0..rounds {
                drop_caches()?;
                best = best.min(bench.time(op, &mut Phases::default())?);
            }
            cold.push((op, best));
        }
        let raw = cold.first().map_or(f64::NAN, |(_, t)| t.as_secs_f64());
        println!();
        println!("Cold page cache (caches dropped before each run):");
        println!();
        println!("| operation | s | MB/s | × cold raw read |");
        println!("|---|---:|---:|---:|");
        for (op, t) in &cold {
            let s = t.as_secs_f64();
            println!(
                "| {} | {:.3} | {:.0} | {:.1} |",
                op.name(),
                s,
                bytes / s / 1e6,
                s / raw
            );
        }
    }
    match &moat {
        Some(m) => println!("moat binary: {}", m.display()),
        None => println!(
            "moat CLI row skipped: {}",
            if opts.no_cli {
                "--no-cli"
            } else {
                "no target/release/moat (build it with `cargo build --release -p moat`, or pass --moat)"
            }
        ),
    }
    println!("{checked}");
    if opts.quick {
        println!("(--quick: a small WAL, figures are only a smoke test)");
    }
    if opts.json {
        let time_of = |want: Op| {
            ops.iter()
                .zip(&best)
                .find(|(op, _)| **op == want)
                .map(|(_, t)| t.as_secs_f64())
        };
        let dump = time_of(Op::Dump).unwrap_or(f64::NAN);
        let out = serde_json::json!({
            "bench": "swarm_dump",
            "quick": opts.quick,
            "entries": n,
            "records": fx.records,
            "segments": fx.segments.len(),
            "wal_bytes": fx.wal_bytes,
            "file_bytes": fx.file_bytes,
            "rounds": rounds,
            "raw_read_s": raw,
            "raw_read_files_s": time_of(Op::RawFiles),
            "parse_in_memory_s": time_of(Op::Parse),
            "decrypt_in_memory_s": time_of(Op::Decrypt),
            "read_log_s": time_of(Op::ReadLog),
            "rebuild_in_memory_s": time_of(Op::Rebuild),
            "open_s": time_of(Op::Open),
            "dump_s": dump,
            "dump_phases_s": {
                "open": best_phases.open.as_secs_f64(),
                "dump_store": best_phases.dump_store.as_secs_f64(),
                "serialize": best_phases.serialize.as_secs_f64(),
            },
            "dump_json_bytes": best_phases.json_bytes,
            "cli_s": time_of(Op::Cli),
            "read_log_over_raw": time_of(Op::ReadLog).map(|t| t / raw),
            "dump_over_raw": dump / raw,
            "cli_over_raw": time_of(Op::Cli).map(|t| t / raw),
            "dump_mb_s": bytes / dump / 1e6,
            "dump_entries_s": n as f64 / dump,
            "cold_s": cold
                .iter()
                .map(|(op, t)| (format!("{op:?}"), t.as_secs_f64()))
                .collect::<BTreeMap<_, _>>(),
        });
        println!("{out}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The state directory

/// The generated state directory.
struct Fixture {
    /// Holds everything; removed when dropped.
    _dir: TempDir,
    /// The state directory (`…/swarm`).
    root: PathBuf,
    /// WAL segments and how many bytes of records each holds.
    segments: Vec<(PathBuf, u64)>,
    /// The certificate and key files.
    key_files: Vec<PathBuf>,
    /// Entries written.
    entries: u64,
    /// WAL records written (all types).
    records: u64,
    /// Bytes of records in the segments (the data, not the zero tail).
    wal_bytes: u64,
    /// Bytes of the segment files.
    file_bytes: u64,
    /// Plaintext bytes of all entries.
    plaintext_bytes: u64,
    /// The objects the store must hold at the end, by kind.
    expected: BTreeMap<ObjectKind, usize>,
}

impl Fixture {
    fn generate(n: u64, fixture: &Path, base: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("moat-bench-swarm-")
            .tempdir_in(base)
            .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
        let root = dir.path().join("swarm");
        let wal_dir = root.join(WAL_DIR);
        fs::create_dir_all(&wal_dir).with_context(|| format!("creating {}", wal_dir.display()))?;
        fs::create_dir_all(root.join("certificates"))?;
        let mut key_files = Vec::new();
        for rel in [NODE_KEY_FILE, NODE_CERT_FILE, ROOT_CA_FILE] {
            let to = root.join(rel);
            fs::copy(fixture.join(rel), &to)
                .with_context(|| format!("copying {} from {}", rel, fixture.display()))?;
            key_files.push(to);
        }
        set_modes(&root)?;

        // The data key, in clear in the fixture's node key (autolock off),
        // and the manager's RaftMember from the fixture's WAL metadata.
        let keys = StateDir::open(&root)
            .and_then(|d| d.open_keys(None))
            .context("opening the fixture's data key")?
            .keys;
        let dek = *keys
            .current
            .as_ref()
            .context("the fixture's node key has no raft-dek")?
            .expose_secret();
        let member = fixture_member(fixture)?;
        let root_ca_pem = fs::read(fixture.join(ROOT_CA_FILE))?;
        let node_cert_pem = fs::read(fixture.join(NODE_CERT_FILE))?;

        let mut wal = WalWriter::create(wal_dir, member.encode_to_vec())?;
        let sealer = Sealer::new(&dek);
        let mut sim = Swarm::new(member, root_ca_pem, node_cert_pem);
        let mut plaintext_bytes = 0u64;
        for index in 1..=n {
            let (entry_type, term, plaintext) = sim.entry(index);
            plaintext_bytes += plaintext.len() as u64;
            let data = sealer.seal(&plaintext)?;
            let hard_state = (term, if term == 1 { 0 } else { sim.member.raft_id }, index);
            wal.save(entry_type, term, index, &data, hard_state)?;
        }
        let records = wal.records;
        let segments = wal.finish()?;
        let wal_bytes = segments.iter().map(|(_, len)| len).sum();
        let mut file_bytes = 0;
        for (path, _) in &segments {
            file_bytes += fs::metadata(path)?.len();
        }
        Ok(Self {
            _dir: dir,
            root,
            segments,
            key_files,
            entries: n,
            records,
            wal_bytes,
            file_bytes,
            plaintext_bytes,
            expected: sim.expected(),
        })
    }

    /// `moat_swarm::verify` accepts the directory and the rebuilt store
    /// holds what was written; returns a line saying so.
    fn check(&self) -> Result<String> {
        let report = moat_swarm::verify(&self.root, None).context("moat_swarm::verify")?;
        ensure!(
            report.entries as u64 == self.entries
                && report.entries_authenticated as u64 == self.entries
                && report.records as u64 == self.records
                && report.segments == self.segments.len()
                && report.wal_bytes == self.wal_bytes
                && report.uncommitted == 0
                && report.notices.is_empty(),
            "moat_swarm::verify read something else than was written: {report:?}"
        );
        let opened = moat_swarm::open(&self.root, None).context("moat_swarm::open")?;
        let rebuilt = opened.store.as_ref().context("the store was not rebuilt")?;
        ensure!(
            rebuilt.rejected_entries == 0 && rebuilt.notices.is_empty(),
            "the store rebuilt with rejected entries or notices: {:?}",
            rebuilt.notices
        );
        for kind in ObjectKind::ALL {
            let want = self.expected.get(&kind).copied().unwrap_or(0);
            let got = rebuilt.store.count(kind);
            ensure!(
                got == want,
                "the store holds {got} {}, not {want}",
                kind.plural()
            );
        }
        Ok(format!(
            "checked: moat_swarm::verify matched every CRC-32C of {} records in {} segment(s) and \
             authenticated all {} entries; the store rebuilt from them holds {} objects ({} \
             tasks), no entry rejected",
            report.records,
            report.segments,
            report.entries_authenticated,
            self.expected.values().sum::<usize>(),
            self.expected.get(&ObjectKind::Task).copied().unwrap_or(0)
        ))
    }
}

/// The modes Swarm gives its state directory.
fn set_modes(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    for (rel, mode) in [
        (".", 0o700),
        ("raft", 0o700),
        (WAL_DIR, 0o700),
        ("certificates", 0o755),
        (NODE_KEY_FILE, 0o600),
        (NODE_CERT_FILE, 0o644),
        (ROOT_CA_FILE, 0o644),
    ] {
        let p = root.join(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", p.display()))?;
    }
    Ok(())
}

/// The manager's `RaftMember`, from the metadata record of the fixture's
/// first WAL segment.
fn fixture_member(fixture: &Path) -> Result<RaftMember> {
    let (segments, _) = StateDir::open(fixture)?.wal_segments()?;
    let first = segments.first().context("the fixture has no WAL segment")?;
    let bytes = moat_swarm::wal::read_segment_file(&fixture.join(first), first)?;
    let read = moat_swarm::wal::parse_segment(first, &bytes, 0);
    for rec in read.records {
        if let WalRecordKind::Metadata(m) = rec.kind {
            return Ok(RaftMember {
                raft_id: m.raft_id,
                node_id: m.node_id,
                addr: m.addr,
                status: None,
            });
        }
    }
    bail!("the fixture's WAL has no metadata record")
}

// ---------------------------------------------------------------------------
// etcd's WAL, as written (bench-only: moat-swarm only reads)

/// Writes WAL segments as etcd's `wal` package does.
struct WalWriter {
    dir: PathBuf,
    /// The segment being written: its sequence number and bytes.
    seq: u64,
    name: String,
    buf: Vec<u8>,
    /// The running CRC-32C.
    crc: u32,
    /// The metadata record's data (an `api.RaftMember`).
    metadata: Vec<u8>,
    /// The last state record's data.
    state: Vec<u8>,
    last_index: u64,
    records: u64,
    done: Vec<(PathBuf, u64)>,
}

impl WalWriter {
    /// A fresh WAL (`wal.Create`): crc(0), metadata, snapshot{0, 0}.
    fn create(dir: PathBuf, metadata: Vec<u8>) -> Result<Self> {
        let mut w = Self {
            dir,
            seq: 0,
            name: segment_name(0, 0),
            buf: Vec::with_capacity(SEGMENT_SIZE as usize + (1 << 20)),
            crc: 0,
            metadata,
            state: Vec::new(),
            last_index: 0,
            records: 0,
            done: Vec::new(),
        };
        w.record(CRC, None);
        let md = w.metadata.clone();
        w.record(METADATA, Some(&md));
        // walpb.Snapshot{Index: 0, Term: 0}: proto2, zero values encoded.
        let mut snap = Vec::new();
        field_varint(&mut snap, 1, 0);
        field_varint(&mut snap, 2, 0);
        w.record(SNAPSHOT, Some(&snap));
        Ok(w)
    }

    /// One `walpb.Record` framed: the CRC-32C chained over its data (a crc
    /// record carries the running value and is not hashed).
    fn record(&mut self, record_type: u64, data: Option<&[u8]>) {
        if let Some(d) = data {
            self.crc = crc32c::crc32c_append(self.crc, d);
        }
        let mut rec = Vec::with_capacity(data.map_or(0, <[u8]>::len) + 16);
        field_varint(&mut rec, 1, record_type);
        field_varint(&mut rec, 2, u64::from(self.crc));
        if let Some(d) = data {
            field_bytes(&mut rec, 3, d);
        }
        let pad = (8 - rec.len() % 8) % 8;
        let mut len_field = rec.len() as u64;
        if pad != 0 {
            len_field |= (0x80 | pad as u64) << 56;
        }
        self.buf.extend_from_slice(&len_field.to_le_bytes());
        self.buf.extend_from_slice(&rec);
        self.buf.resize(self.buf.len() + pad, 0);
        self.records += 1;
    }

    /// `wal.Save` of one entry and the hard state (term, vote, commit): the
    /// entry record, the state record, then a cut if the segment is full.
    fn save(
        &mut self,
        entry_type: u64,
        term: u64,
        index: u64,
        data: &[u8],
        (hs_term, vote, commit): (u64, u64, u64),
    ) -> Result<()> {
        // raftpb.Entry (proto2, gogo non-nullable): Type, Term, Index, Data.
        let mut entry = Vec::with_capacity(data.len() + 24);
        field_varint(&mut entry, 1, entry_type);
        field_varint(&mut entry, 2, term);
        field_varint(&mut entry, 3, index);
        field_bytes(&mut entry, 4, data);
        self.record(ENTRY, Some(&entry));
        self.last_index = index;
        // raftpb.HardState: Term, Vote, Commit.
        let mut hs = Vec::with_capacity(24);
        field_varint(&mut hs, 1, hs_term);
        field_varint(&mut hs, 2, vote);
        field_varint(&mut hs, 3, commit);
        self.record(STATE, Some(&hs));
        self.state = hs;
        if self.buf.len() as u64 >= SEGMENT_SIZE {
            self.cut()?;
        }
        Ok(())
    }

    /// `wal.cut`: the full segment ends where its data ends; the next one,
    /// named after the next index, starts with crc, metadata and state.
    fn cut(&mut self) -> Result<()> {
        let path = self.dir.join(&self.name);
        fs::write(&path, &self.buf).with_context(|| format!("writing {}", path.display()))?;
        self.done.push((path, self.buf.len() as u64));
        self.buf.clear();
        self.seq += 1;
        self.name = segment_name(self.seq, self.last_index + 1);
        self.record(CRC, None);
        let md = self.metadata.clone();
        self.record(METADATA, Some(&md));
        let st = self.state.clone();
        self.record(STATE, Some(&st));
        Ok(())
    }

    /// Writes the last segment, preallocated to [`SEGMENT_SIZE`] (a sparse
    /// zero tail), and returns every segment with its data length.
    fn finish(mut self) -> Result<Vec<(PathBuf, u64)>> {
        let path = self.dir.join(&self.name);
        fs::write(&path, &self.buf).with_context(|| format!("writing {}", path.display()))?;
        let len = self.buf.len() as u64;
        if len < SEGMENT_SIZE {
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(SEGMENT_SIZE))
                .with_context(|| format!("preallocating {}", path.display()))?;
        }
        self.done.push((path, len));
        Ok(self.done)
    }
}

/// `%016x-%016x.wal`: sequence, first index.
fn segment_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    varint(out, field << 3);
    varint(out, v);
}

fn field_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Seals entry data as SwarmKit does: `MaybeEncryptedRecord{SECRETBOX,
/// secretbox(plaintext) = tag ‖ ciphertext, random 24-byte nonce}`.
struct Sealer {
    cipher: XSalsa20Poly1305,
    rng: SystemRandom,
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: XSalsa20Poly1305::new(Key::from_slice(key)),
            rng: SystemRandom::new(),
        }
    }

    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 24];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("no random nonce"))?;
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| anyhow::anyhow!("secretbox sealing failed"))?;
        // proto3: algorithm 1 (SECRETBOX_SALSA20_POLY1305), data, nonce.
        let mut rec = Vec::with_capacity(sealed.len() + 32);
        field_varint(&mut rec, 1, 1);
        field_bytes(&mut rec, 2, &sealed);
        field_bytes(&mut rec, 3, &nonce);
        Ok(rec)
    }
}

// ---------------------------------------------------------------------------
// What a swarm's manager writes

/// One replica slot of a service: its tasks, oldest first.
struct Slot {
    service: usize,
    slot: u64,
    generation: u64,
    tasks: VecDeque<Task>,
}

/// The swarm whose raft log is generated.
struct Swarm {
    member: RaftMember,
    root_ca_pem: Vec<u8>,
    node_cert_pem: Vec<u8>,
    nodes: Vec<Node>,
    services: Vec<Service>,
    secret_id: String,
    slots: Vec<Slot>,
    next_id: u64,
    /// Entries of the rolling updates so far.
    churn: u64,
    /// Objects created by the setup entries, by kind.
    setup: BTreeMap<ObjectKind, usize>,
}

impl Swarm {
    fn new(member: RaftMember, root_ca_pem: Vec<u8>, node_cert_pem: Vec<u8>) -> Self {
        Self {
            member,
            root_ca_pem,
            node_cert_pem,
            nodes: Vec::new(),
            services: Vec::new(),
            secret_id: String::new(),
            slots: Vec::new(),
            next_id: 0,
            churn: 0,
            setup: BTreeMap::new(),
        }
    }

    /// A SwarmKit-style id: 25 base-36 digits.
    fn id(&mut self) -> String {
        self.next_id += 1;
        let mut x = splitmix(self.next_id) as u128 | ((splitmix(!self.next_id) as u128) << 64);
        let mut s = [b'0'; 25];
        for c in s.iter_mut().rev() {
            *c = b"0123456789abcdefghijklmnopqrstuvwxyz"[(x % 36) as usize];
            x /= 36;
        }
        String::from_utf8_lossy(&s).into_owned()
    }

    /// The objects the store holds after the entries generated so far.
    fn expected(&self) -> BTreeMap<ObjectKind, usize> {
        let mut out = self.setup.clone();
        out.insert(
            ObjectKind::Task,
            self.slots.iter().map(|s| s.tasks.len()).sum(),
        );
        out
    }

    /// Entry `index`: its type, term and plaintext.
    fn entry(&mut self, index: u64) -> (u64, u64, Vec<u8>) {
        let setup_end = 4 + WORKERS as u64 + SERVICES as u64;
        match index {
            1 => {
                let cc = ConfChange {
                    id: splitmix(index),
                    change_type: conf_change_type::ADD_NODE,
                    node_id: self.member.raft_id,
                    context: self.member.encode_to_vec(),
                };
                (1, 1, cc.encode_to_vec())
            }
            // The new leader's no-op: an empty plaintext, sealed too.
            2 => (0, 2, Vec::new()),
            3 => {
                let cluster = self.cluster(index);
                let manager = self.node(index, 0);
                let ingress = self.ingress(index);
                let secret = self.secret(index);
                self.setup.insert(ObjectKind::Cluster, 1);
                self.setup.insert(ObjectKind::Node, 1);
                self.setup.insert(ObjectKind::Network, 1);
                self.setup.insert(ObjectKind::Secret, 1);
                (
                    0,
                    2,
                    request(
                        index,
                        vec![
                            create(StoreTarget::Cluster(cluster)),
                            create(StoreTarget::Node(manager)),
                            create(StoreTarget::Network(ingress)),
                            create(StoreTarget::Secret(secret)),
                        ],
                    ),
                )
            }
            i if i < 4 + WORKERS as u64 => {
                let node = self.node(index, self.nodes.len());
                *self.setup.entry(ObjectKind::Node).or_default() += 1;
                (0, 2, request(index, vec![create(StoreTarget::Node(node))]))
            }
            i if i < setup_end => {
                let service = self.service(index);
                *self.setup.entry(ObjectKind::Service).or_default() += 1;
                (
                    0,
                    2,
                    request(index, vec![create(StoreTarget::Service(service))]),
                )
            }
            _ => {
                let actions = self.rolling_update(index);
                (0, 2, request(index, actions))
            }
        }
    }

    /// One step of a rolling update of every slot, in waves: all slots
    /// create a new task (and mark the running one for shutdown), then all
    /// assign it, run it, shut the old one down, and remove the oldest past
    /// the history limit (or, with nothing to remove, a node reports).
    fn rolling_update(&mut self, index: u64) -> Vec<StoreAction> {
        if self.slots.is_empty() {
            for service in 0..SERVICES {
                for slot in 1..=REPLICAS as u64 {
                    self.slots.push(Slot {
                        service,
                        slot,
                        generation: 0,
                        tasks: VecDeque::new(),
                    });
                }
            }
        }
        let k = self.churn;
        self.churn += 1;
        let s = (k % self.slots.len() as u64) as usize;
        let step = (k / self.slots.len() as u64) % 5;
        let t = time(index);
        let node_count = self.nodes.len();
        match step {
            0 => {
                let id = self.id();
                let task = self.task(index, s, id);
                let slot = &mut self.slots[s];
                slot.generation += 1;
                let mut actions = vec![create(StoreTarget::Task(task.clone()))];
                if let Some(old) = slot.tasks.back_mut() {
                    old.desired_state = task_state::SHUTDOWN;
                    touch(old.meta.as_mut(), index, t);
                    actions.push(update(StoreTarget::Task(old.clone())));
                }
                slot.tasks.push_back(task);
                actions
            }
            1 | 2 => {
                let slot = &mut self.slots[s];
                let Some(task) = slot.tasks.back_mut() else {
                    return self.node_update(index, s);
                };
                let (state, message) = if step == 1 {
                    task.node_id = self.nodes[(s + slot.generation as usize) % node_count]
                        .id
                        .clone();
                    (ASSIGNED, "scheduler assigned task to node")
                } else {
                    (task_state::RUNNING, "started")
                };
                set_status(task, index, t, state, message);
                vec![update(StoreTarget::Task(task.clone()))]
            }
            3 => {
                let slot = &mut self.slots[s];
                let n = slot.tasks.len();
                if n < 2 {
                    return self.node_update(index, s);
                }
                let old = &mut slot.tasks[n - 2];
                set_status(old, index, t, task_state::SHUTDOWN, "shutdown");
                vec![update(StoreTarget::Task(old.clone()))]
            }
            _ => {
                let slot = &mut self.slots[s];
                if slot.tasks.len() > HISTORY
                    && let Some(oldest) = slot.tasks.pop_front()
                {
                    return vec![remove(StoreTarget::Task(oldest))];
                }
                self.node_update(index, s)
            }
        }
    }

    /// A node's description or status changes.
    fn node_update(&mut self, index: u64, k: usize) -> Vec<StoreAction> {
        let i = k % self.nodes.len();
        let t = time(index);
        let node = &mut self.nodes[i];
        touch(node.meta.as_mut(), index, t);
        if let Some(st) = node.status.as_mut() {
            st.message = format!("heartbeat at index {index}");
        }
        vec![update(StoreTarget::Node(node.clone()))]
    }

    fn cluster(&mut self, index: u64) -> Cluster {
        let t = time(index);
        let id = self.id();
        let mut root_ca = RootCa::default();
        root_ca.ca_key = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
            "MHcCAQEEI".repeat(20)
        )
        .into_bytes();
        root_ca.ca_cert = self.root_ca_pem.clone();
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.root_ca_pem);
        root_ca.ca_cert_hash = format!("sha256:{}", hex(digest.as_ref()));
        let mut tokens = JoinTokens::default();
        tokens.worker = format!("SWMTKN-1-{}-{}", self.id(), self.id());
        tokens.manager = format!("SWMTKN-1-{}-{}", self.id(), self.id());
        root_ca.join_tokens = Some(tokens);
        let mut ca_config = CaConfig::default();
        ca_config.node_cert_expiry = Some(PbDuration {
            seconds: 90 * 24 * 3600,
            nanos: 0,
        });
        let mut keys = Vec::new();
        for (n, subsystem) in ["networking:gossip", "networking:ipsec"]
            .iter()
            .flat_map(|s| [s; 3])
            .enumerate()
        {
            let mut k = EncryptionKey::default();
            k.subsystem = (*subsystem).to_owned();
            k.algorithm = 1;
            k.key = splitmix(n as u64).to_le_bytes().repeat(2);
            k.lamport_time = n as u64 / 3;
            keys.push(k);
        }
        Cluster {
            id,
            meta: Some(meta(index, t)),
            spec: Some(ClusterSpec {
                annotations: Some(named("default")),
                orchestration: Some(OrchestrationConfig {
                    task_history_retention_limit: HISTORY as i64,
                }),
                raft: Some(RaftConfig {
                    // No snapshot in this log: as `docker swarm update
                    // --snapshot-interval` past N sets it.
                    snapshot_interval: 10_000_000,
                    keep_old_snapshots: 0,
                    log_entries_for_slow_followers: 500,
                    heartbeat_tick: 1,
                    election_tick: 10,
                }),
                dispatcher: Some(DispatcherConfig {
                    heartbeat_period: Some(PbDuration {
                        seconds: 5,
                        nanos: 0,
                    }),
                }),
                ca_config: Some(ca_config),
                encryption_config: Some(EncryptionConfig {
                    auto_lock_managers: false,
                }),
            }),
            root_ca: Some(root_ca),
            network_bootstrap_keys: keys,
            encryption_key_lamport_clock: 1,
            blacklisted_certificates: BTreeMap::new(),
            unlock_keys: Vec::new(),
            fips: false,
            default_address_pool: vec!["10.0.0.0/8".into()],
            subnet_size: 24,
            vxlan_udp_port: 4789,
        }
    }

    fn node(&mut self, index: u64, i: usize) -> Node {
        let t = time(index);
        let manager = i == 0;
        let id = if manager {
            self.member.node_id.clone()
        } else {
            self.id()
        };
        let node = Node {
            id: id.clone(),
            meta: Some(meta(index, t)),
            spec: Some(NodeSpec {
                annotations: Some(Annotations {
                    name: String::new(),
                    labels: BTreeMap::from([("zone".into(), format!("zone-{}", i % 3))]),
                }),
                desired_role: if manager {
                    node_role::MANAGER
                } else {
                    node_role::WORKER
                },
                membership: 1,
                availability: 0,
            }),
            description: Some(NodeDescription {
                hostname: if manager {
                    "manager-0".into()
                } else {
                    format!("worker-{i}")
                },
                platform: Some(Platform {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                }),
                engine: Some(EngineDescription {
                    engine_version: "20.10.24".into(),
                }),
                tls_info: Some(NodeTlsInfo {
                    trust_root: self.root_ca_pem.clone(),
                    cert_issuer_subject: b"0\x131\x110\x0f\x06\x03U\x04\x03\x13\x08swarm-ca"
                        .to_vec(),
                    cert_issuer_public_key: vec![0x04; 91],
                }),
                fips: false,
            }),
            status: Some(NodeStatus {
                state: 2,
                message: String::new(),
                addr: format!("10.0.0.{}", i + 2),
            }),
            manager_status: manager.then(|| ManagerStatus {
                raft_id: self.member.raft_id,
                addr: self.member.addr.clone(),
                leader: true,
                reachability: 2,
            }),
            certificate: Some(Certificate {
                role: if manager {
                    node_role::MANAGER
                } else {
                    node_role::WORKER
                },
                csr: Vec::new(),
                status: Some(IssuanceStatus {
                    state: 3,
                    err: String::new(),
                }),
                certificate: if manager {
                    Vec::new()
                } else {
                    self.node_cert_pem.clone()
                },
                cn: id,
            }),
            role: if manager {
                node_role::MANAGER
            } else {
                node_role::WORKER
            },
            vxlan_udp_port: 4789,
        };
        self.nodes.push(node.clone());
        node
    }

    fn ingress(&mut self, index: u64) -> Network {
        Network {
            id: self.id(),
            meta: Some(meta(index, time(index))),
            spec: Some(NetworkSpec {
                annotations: Some(Annotations {
                    name: "ingress".into(),
                    labels: BTreeMap::new(),
                }),
                driver_config: Some(Driver {
                    name: "overlay".into(),
                    options: BTreeMap::new(),
                }),
                ipv6_enabled: false,
                internal: false,
                attachable: false,
                ingress: true,
            }),
            driver_state: Some(Driver {
                name: "overlay".into(),
                options: BTreeMap::from([(
                    "com.docker.network.driver.overlay.vxlanid_list".into(),
                    "4096".into(),
                )]),
            }),
            pending_delete: false,
        }
    }

    fn secret(&mut self, index: u64) -> Secret {
        self.secret_id = self.id();
        let mut spec = SecretSpec::default();
        spec.annotations = Some(named("db_password"));
        spec.data = b"correct horse battery staple".to_vec();
        Secret {
            id: self.secret_id.clone(),
            meta: Some(meta(index, time(index))),
            spec: Some(spec),
            internal: false,
        }
    }

    fn service(&mut self, index: u64) -> Service {
        let i = self.services.len();
        let name = format!("shop_{}", ["web", "api", "worker", "cart", "search"][i % 5]);
        let name = format!("{name}{}", i / 5);
        let service = Service {
            id: self.id(),
            meta: Some(meta(index, time(index))),
            spec: Some(ServiceSpec {
                annotations: Some(Annotations {
                    name: name.clone(),
                    labels: BTreeMap::from([("com.docker.stack.namespace".into(), "shop".into())]),
                }),
                task: Some(self.task_spec(&name, 0)),
                mode: Some(ServiceMode::Replicated(ReplicatedService {
                    replicas: REPLICAS as u64,
                })),
            }),
            previous_spec: None,
            pending_delete: false,
            spec_version: Some(Version { index }),
            previous_spec_version: None,
        };
        self.services.push(service.clone());
        service
    }

    fn task_spec(&self, service: &str, generation: u64) -> TaskSpec {
        let mut c = ContainerSpec::default();
        c.image = format!(
            "registry.example.com/shop/{service}:1.{generation}@sha256:{}",
            hex(&splitmix(generation).to_le_bytes()).repeat(4)
        );
        c.labels = BTreeMap::from([("com.docker.stack.namespace".into(), "shop".into())]);
        c.args = vec!["--port".into(), "8080".into()];
        c.env = vec![
            "PORT=8080".into(),
            "LOG_LEVEL=info".into(),
            format!(
                "SESSION_KEY={}",
                hex(&splitmix(generation ^ 7).to_le_bytes())
            ),
        ];
        c.dir = "/app".into();
        c.user = "app".into();
        c.secrets = vec![SecretReference {
            secret_id: self.secret_id.clone(),
            secret_name: "db_password".into(),
            file: None,
        }];
        TaskSpec {
            runtime: Some(TaskRuntime::Container(c)),
            force_update: 0,
        }
    }

    fn task(&self, index: u64, s: usize, id: String) -> Task {
        let slot = &self.slots[s];
        let service = &self.services[slot.service];
        let name = service
            .spec
            .as_ref()
            .and_then(|sp| sp.annotations.as_ref())
            .map_or_else(String::new, |a| a.name.clone());
        let t = time(index);
        Task {
            annotations: Some(named(&format!("{name}.{}.{id}", slot.slot))),
            id,
            meta: Some(meta(index, t)),
            spec: Some(self.task_spec(&name, slot.generation + 1)),
            service_id: service.id.clone(),
            slot: slot.slot,
            node_id: String::new(),
            service_annotations: service.spec.as_ref().and_then(|sp| sp.annotations.clone()),
            status: Some(TaskStatus {
                timestamp: Some(t),
                state: PENDING,
                message: "pending task scheduling".into(),
                err: String::new(),
            }),
            desired_state: task_state::RUNNING,
        }
    }
}

fn request(index: u64, action: Vec<StoreAction>) -> Vec<u8> {
    InternalRaftRequest {
        id: splitmix(index ^ 0x5eed),
        action,
    }
    .encode_to_vec()
}

fn create(target: StoreTarget) -> StoreAction {
    StoreAction {
        action: store_action_kind::CREATE,
        target: Some(target),
    }
}

fn update(target: StoreTarget) -> StoreAction {
    StoreAction {
        action: store_action_kind::UPDATE,
        target: Some(target),
    }
}

fn remove(target: StoreTarget) -> StoreAction {
    StoreAction {
        action: store_action_kind::REMOVE,
        target: Some(target),
    }
}

fn time(index: u64) -> Timestamp {
    Timestamp {
        seconds: EPOCH + (index / 4) as i64,
        nanos: ((index % 4) * 250_000_000) as i32,
    }
}

fn meta(index: u64, t: Timestamp) -> Meta {
    Meta {
        version: Some(Version { index }),
        created_at: Some(t),
        updated_at: Some(t),
    }
}

fn touch(meta: Option<&mut Meta>, index: u64, t: Timestamp) {
    if let Some(m) = meta {
        m.version = Some(Version { index });
        m.updated_at = Some(t);
    }
}

fn set_status(task: &mut Task, index: u64, t: Timestamp, state: i32, message: &str) {
    touch(task.meta.as_mut(), index, t);
    task.status = Some(TaskStatus {
        timestamp: Some(t),
        state,
        message: message.into(),
        err: String::new(),
    });
}

fn named(name: &str) -> Annotations {
    Annotations {
        name: name.into(),
        labels: BTreeMap::new(),
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------
// Measurement

/// One measured operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    RawData,
    RawFiles,
    Parse,
    Decrypt,
    ReadLog,
    Rebuild,
    Open,
    Dump,
    Cli,
}

impl Op {
    /// In table order; the first is the baseline.
    const ALL: [Op; 9] = [
        Op::RawData,
        Op::RawFiles,
        Op::Parse,
        Op::Decrypt,
        Op::ReadLog,
        Op::Rebuild,
        Op::Open,
        Op::Dump,
        Op::Cli,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::RawData => "raw read of the WAL data and key files (baseline)",
            Op::RawFiles => "raw read of the whole files (std::fs::read, zero tail too)",
            Op::Parse => "part: parse_segment (framing + CRC-32C), WAL data in memory",
            Op::Decrypt => "part: secretbox open of every entry, in memory (crypto floor)",
            Op::ReadLog => "read_log: read + CRC-32C + decrypt",
            Op::Rebuild => "part: Store::rebuild from the decrypted log in memory",
            Op::Open => "moat_swarm::open: read_log + rebuild the store",
            Op::Dump => "full dump: open + dump_store + JSON (in process)",
            Op::Cli => "moat store dump --docker-swarm DIR --format json (CLI)",
        }
    }
}

/// Where the full dump's time went (one run).
#[derive(Default, Clone, Copy)]
struct Phases {
    open: Duration,
    dump_store: Duration,
    serialize: Duration,
    json_bytes: usize,
}

impl Phases {
    fn rows(&self) -> [(&'static str, Duration); 3] {
        [
            ("moat_swarm::open", self.open),
            ("dump_store (JSON value)", self.dump_store),
            ("serde_json::to_vec_pretty", self.serialize),
        ]
    }
}

/// What the operations run on.
struct Bench<'a> {
    fx: &'a Fixture,
    moat: Option<&'a Path>,
    /// Each segment's name and data, in memory.
    wal: Vec<(String, Vec<u8>)>,
    /// The data key and every entry's (nonce, tag ‖ ciphertext).
    key: [u8; 32],
    sealed: Vec<([u8; 24], Vec<u8>)>,
    /// The log, read and decrypted.
    log: moat_swarm::raftlog::RaftLog,
}

impl<'a> Bench<'a> {
    /// Loads what the in-memory parts run on (untimed).
    fn new(fx: &'a Fixture, moat: Option<&'a Path>) -> Result<Self> {
        let mut wal = Vec::new();
        let mut sealed = Vec::new();
        let mut crc = 0;
        for (path, len) in &fx.segments {
            let mut buf = Vec::with_capacity(*len as usize);
            fs::File::open(path)?.take(*len).read_to_end(&mut buf)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let read = moat_swarm::wal::parse_segment(&name, &buf, crc);
            crc = read.crc;
            for rec in read.records {
                if let WalRecordKind::Entry(e) = rec.kind {
                    let r = moat_swarm::record::MaybeEncryptedRecord::decode(&e.data)
                        .map_err(|e| anyhow::anyhow!("an entry's record: {e:?}"))?;
                    let nonce: [u8; 24] = r.nonce.try_into().context("a nonce of 24 bytes")?;
                    sealed.push((nonce, r.data.to_vec()));
                }
            }
            wal.push((name, buf));
        }
        let dir = StateDir::open(&fx.root)?;
        let keys = dir.open_keys(None)?.keys;
        let key = *keys
            .current
            .as_ref()
            .context("no data key")?
            .expose_secret();
        let log = moat_swarm::raftlog::read_log(&dir, Some(&keys))?;
        Ok(Self {
            fx,
            moat,
            wal,
            key,
            sealed,
            log,
        })
    }
}

impl Bench<'_> {
    /// Runs `op` once and returns how long it took; fails if it did not
    /// read what was written.
    fn time(&self, op: Op, phases: &mut Phases) -> Result<Duration> {
        let fx = self.fx;
        let start = Instant::now();
        match op {
            Op::RawData => {
                let mut total = 0u64;
                for (path, len) in &fx.segments {
                    let mut buf = Vec::with_capacity(*len as usize);
                    fs::File::open(path)?.take(*len).read_to_end(&mut buf)?;
                    total += black_box(buf).len() as u64;
                }
                for path in &fx.key_files {
                    black_box(fs::read(path)?);
                }
                ensure!(total == fx.wal_bytes, "read {total} bytes of WAL data");
            }
            Op::RawFiles => {
                for path in fx.segments.iter().map(|(p, _)| p).chain(&fx.key_files) {
                    black_box(fs::read(path)?);
                }
            }
            Op::Parse => {
                let mut crc = 0;
                let mut records = 0u64;
                for (name, bytes) in &self.wal {
                    let read = moat_swarm::wal::parse_segment(name, bytes, crc);
                    crc = read.crc;
                    records += read.records.len() as u64;
                }
                ensure!(records == fx.records, "parsed {records} records");
            }
            Op::Decrypt => {
                let mut plain = 0usize;
                for (nonce, data) in &self.sealed {
                    let cipher = XSalsa20Poly1305::new(Key::from_slice(&self.key));
                    let p = cipher
                        .decrypt(Nonce::from_slice(nonce), data.as_slice())
                        .map_err(|_| anyhow::anyhow!("an entry does not authenticate"))?;
                    plain += black_box(p).len();
                }
                ensure!(plain as u64 == fx.plaintext_bytes, "opened {plain} bytes");
            }
            Op::Rebuild => {
                let rebuilt = moat_swarm::store::Store::rebuild(&self.log)?;
                let elapsed = start.elapsed();
                ensure!(rebuilt.rejected_entries == 0, "entries rejected");
                return Ok(elapsed);
            }
            Op::ReadLog => {
                // The keys are opened untimed: this row is the log alone.
                let dir = StateDir::open(&fx.root)?;
                let keys: DataKeys = dir.open_keys(None)?.keys;
                let start = Instant::now();
                let log = moat_swarm::raftlog::read_log(&dir, Some(&keys))?;
                let elapsed = start.elapsed();
                ensure!(
                    log.entries.len() as u64 == fx.entries
                        && log.entries.iter().all(|e| e.plaintext.is_some()),
                    "read_log read {} entries, not {} all decrypted",
                    log.entries.len(),
                    fx.entries
                );
                return Ok(elapsed);
            }
            Op::Open => {
                let opened = moat_swarm::open(&fx.root, None)?;
                let elapsed = start.elapsed();
                ensure!(opened.store.is_some(), "the store was not rebuilt");
                return Ok(elapsed);
            }
            Op::Dump => {
                let opened = moat_swarm::open(&fx.root, None)?;
                let t1 = Instant::now();
                let dump = moat_swarm::dump_store(&opened, false)?;
                let t2 = Instant::now();
                let json = serde_json::to_vec_pretty(&dump)?;
                let t3 = Instant::now();
                *phases = Phases {
                    open: t1 - start,
                    dump_store: t2 - t1,
                    serialize: t3 - t2,
                    json_bytes: json.len(),
                };
                black_box(json);
                return Ok(t3 - start);
            }
            Op::Cli => {
                let moat = self.moat.context("no moat binary")?;
                let out = Process::new(moat)
                    .args(["store", "dump", "--format", "json", "--docker-swarm"])
                    .arg(&fx.root)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .with_context(|| format!("running {}", moat.display()))?;
                let elapsed = start.elapsed();
                ensure!(
                    out.status.success(),
                    "moat store dump exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
                return Ok(elapsed);
            }
        }
        Ok(start.elapsed())
    }
}

/// The moat CLI to run: `--moat`, else the workspace's release build, else
/// none (the CLI row is skipped).
/// Writes the page cache back and drops it, so that the next read comes
/// from the disk.
fn drop_caches() -> Result<()> {
    let status = std::process::Command::new("sync").status()?;
    ensure!(status.success(), "sync failed");
    fs::write("/proc/sys/vm/drop_caches", "3")
        .context("--cold needs root: cannot write /proc/sys/vm/drop_caches")?;
    Ok(())
}

fn moat_binary(workspace: &Path, given: Option<&Path>) -> Result<Option<PathBuf>> {
    if let Some(path) = given {
        ensure!(path.is_file(), "--moat {}: no such file", path.display());
        return Ok(Some(path.to_path_buf()));
    }
    let release = workspace.join("target/release/moat");
    Ok(release.is_file().then_some(release))
}
