//! Command-line arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use moat_api::Host;

/// moat: a secure swarm.
///
/// Managers run the cluster's certificate authority and its encrypted,
/// replicated store; every connection between nodes is mutual TLS 1.3.
#[derive(Debug, Parser)]
#[command(name = "moat", version, propagate_version = true)]
#[command(after_help = "Run `moat help <command>` for more on a command.")]
pub(crate) struct Cli {
    /// `-H`/`--host` before the command, as with docker (`moat -H
    /// unix:///x/moat.sock node ls`). The argument is global: clap gives
    /// its value to the command's own [`HostArgs`], which is what the
    /// commands read, so this copy is never read itself.
    #[command(flatten)]
    pub(crate) host: HostArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the moat daemon (a node) in the foreground.
    ///
    /// The daemon serves the control API on a unix socket (default
    /// DIR/moat.sock, mode 0600) and stays inactive until `moat init` or
    /// `moat join` tells it which cluster to be part of. Logs go to standard
    /// error; set the level with MOAT_LOG (e.g. `debug`,
    /// `moat_node=debug,info`). SIGINT or SIGTERM stops it.
    Daemon(DaemonArgs),
    /// Create a cluster with this node as its first manager.
    ///
    /// Prints the command that adds a worker, with the worker join token.
    Init(InitArgs),
    /// Join this node to a cluster as a worker or a manager.
    ///
    /// The token decides the role. Give it in MOAT_JOIN_TOKEN (as the
    /// command `moat init` and `moat join-token` print) or with `--token -`
    /// on standard input, so that it stays out of the process list. It is
    /// checked locally first: a mistyped or truncated token fails before
    /// anything is contacted.
    Join(JoinArgs),
    /// Print (or rotate) the token that joins a worker or a manager;
    /// create, list and revoke scoped tokens.
    #[command(args_conflicts_with_subcommands = true)]
    JoinToken(JoinTokenArgs),
    /// Leave the cluster.
    ///
    /// A manager leaves only with the other managers' agreement, and the
    /// last manager not at all (it would erase the cluster), unless
    /// --force is given.
    Leave(LeaveArgs),
    /// Change the cluster's settings.
    Update(UpdateArgs),
    /// Back up a manager's cluster state, online, encrypted with age.
    ///
    /// The backup is consistent (everything committed before the command)
    /// and taken without stopping anything. It holds the store and the
    /// manager's keys still sealed: with autolock on, restoring it needs
    /// the unlock key valid when it was taken. Without --recipient or
    /// --passphrase it is refused unless --insecure-plaintext is given.
    Backup(BackupArgs),
    /// Lay a backup out as a new manager's state directory (offline).
    ///
    /// Then start `moat daemon --state-dir DIR` (and `moat unlock` if
    /// autolock was on) and run `moat init --force-new-cluster` to make it
    /// the only manager of the restored cluster. Nothing is written to DIR
    /// unless the whole backup verifies.
    Restore(RestoreArgs),
    /// Unlock a locked manager.
    ///
    /// A manager restarted while autolock is on keeps its keys sealed and
    /// serves nothing until it gets the unlock key. The key (or, for a split
    /// key, one share) is read from a hidden prompt on a terminal, or from
    /// standard input one per line. With a split key, several people can
    /// each run `moat unlock` with their own share; the node unlocks when it
    /// has enough.
    Unlock(UnlockArgs),
    /// Show, rotate or split the unlock key (autolock).
    ///
    /// Rotation takes effect on every manager within a heartbeat; a manager
    /// that was down during the rotation unlocks once more with the old key
    /// and then switches to the new one.
    UnlockKey(UnlockKeyArgs),
    /// Show this node's view of the cluster.
    Info(InfoArgs),
    /// Manage the cluster's nodes (run on a manager).
    Node {
        #[command(subcommand)]
        command: Node,
    },
    /// Run services on the cluster: tasks placed by the scheduler on the
    /// nodes, as processes or Docker containers (run on a manager).
    Service {
        #[command(subcommand)]
        command: Service,
    },
    /// Keep secrets for services: passwords, keys, certificates (run on a
    /// manager).
    ///
    /// A secret is stored encrypted with the rest of the cluster state and
    /// reaches only the nodes that run a task using it, only while they do,
    /// and only in memory (a tmpfs): MOAT_SECRETS_DIR for a process task,
    /// /run/secrets in a container. Its data is never shown again.
    Secret {
        #[command(subcommand)]
        command: Secret,
    },
    /// Keep configuration files for services (run on a manager).
    ///
    /// Like secrets, but not secret: `config inspect` shows the data. A
    /// process task finds them in MOAT_CONFIGS_DIR; a container at
    /// /TARGET.
    Config {
        #[command(subcommand)]
        command: Secret,
    },
    /// Run a local cluster of daemons on loopback, for trying moat out.
    ///
    /// Starts N managers and M workers as child processes, each with its
    /// own state directory under DIR, makes the first manager initialize
    /// the cluster and joins the others to it, prints how to reach each
    /// node, then waits for Ctrl-C and stops them all. A daemon that dies
    /// (kill one to watch a failover) is reported and the others keep
    /// running; `moat dev restart NAME` from another terminal brings it
    /// back.
    #[command(args_conflicts_with_subcommands = true)]
    Dev(DevArgs),
    /// Inspect certificates (offline).
    Cert {
        #[command(subcommand)]
        command: Cert,
    },
    /// Inspect join tokens (offline).
    Token {
        #[command(subcommand)]
        command: Token,
    },
    /// Check or read a stopped manager's encrypted store (offline).
    Store {
        #[command(subcommand)]
        command: Store,
    },
    /// The cluster's audit log: export, verify, prove, list, search, and
    /// the compliance report.
    Audit {
        #[command(subcommand)]
        command: Audit,
    },
    /// Show the root CA, or rotate it (run on a manager).
    ///
    /// Without options: the root CA certificate, its fingerprint and
    /// expiry, and any rotation under way (with the nodes it waits for).
    ///
    /// With --rotate: a new root (or yours, with --ca-cert and --ca-key),
    /// cross-signed by the current one; every node trusts both, renews
    /// from the new root, then trusts it alone; the join tokens are
    /// replaced. No node loses its connections. Until the last step,
    /// --rollback returns every node to the current root.
    Ca(CaArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell).
    ///
    /// Generated from the same definitions as the parser, so it knows every
    /// command and option of this binary. For example, bash: `moat
    /// completion bash > /etc/bash_completion.d/moat` (or `source <(moat
    /// completion bash)` in ~/.bashrc); zsh: `moat completion zsh >
    /// ~/.zfunc/_moat` with ~/.zfunc in $fpath; fish: `moat completion
    /// fish > ~/.config/fish/completions/moat.fish`.
    Completion(CompletionArgs),
    /// Write the man pages: moat(1) and one page per command and
    /// subcommand (moat-node-ls(1), …).
    ///
    /// With --out DIR, writes every page into DIR (created if missing;
    /// pages already there are replaced) and prints their paths. Without
    /// it, prints moat(1) alone on standard output (`moat man | man -l -`).
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub(crate) struct ManArgs {
    /// Write every page (NAME.1) into DIR instead of moat.1 to standard
    /// output.
    #[arg(long, short, value_name = "DIR")]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    /// Rotate the root CA (or, with --force, finish the rotation under way
    /// without the nodes that have not renewed).
    #[arg(long)]
    pub(crate) rotate: bool,
    /// Abandon the rotation under way: every node goes back to the
    /// current root.
    #[arg(long, conflicts_with_all = ["rotate", "ca_cert", "ca_key", "cert_expiry", "force"])]
    pub(crate) rollback: bool,
    /// Finish without waiting for nodes that are down; they must rejoin.
    #[arg(long, requires = "rotate")]
    pub(crate) force: bool,
    #[arg(long, value_name = "DURATION", value_parser = parse_cert_expiry, requires = "rotate",
          help = cert_expiry_help("Lifetime of node certificates from now on"))]
    pub(crate) cert_expiry: Option<Duration>,
    /// Your own root CA certificate (PEM) to rotate to; its subject must
    /// name this cluster (O=<cluster id>).
    #[arg(long, value_name = "FILE", requires_all = ["rotate", "ca_key"])]
    pub(crate) ca_cert: Option<PathBuf>,
    /// The private key of --ca-cert (PKCS#8 PEM).
    #[arg(long, value_name = "FILE", requires_all = ["rotate", "ca_cert"])]
    pub(crate) ca_key: Option<PathBuf>,
    /// Start the rotation and return at once (`moat ca` shows progress).
    #[arg(long, short = 'd')]
    pub(crate) detach: bool,
    /// Print only the root certificate (PEM), no progress.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Audit {
    /// Verify an exported audit bundle offline.
    ///
    /// Recomputes the Merkle tree over the records, checks every signed
    /// tree head against the cluster CA and, given a head kept from
    /// earlier, that the log only grew since. Every altered, removed,
    /// reordered or inserted record is reported with its sequence number.
    /// Exits 0 only if everything holds, 1 otherwise.
    Verify(AuditVerify),
    /// Check an inclusion proof file (from `moat audit prove SEQ`) alone.
    ///
    /// Checks that the signed tree head in the file was signed by a manager
    /// of the cluster whose CA certificate is given, and that the audit
    /// path leads from the record to that head's root. Exits 0 if it does,
    /// 1 otherwise.
    VerifyProof(AuditVerifyProof),
    /// Export the cluster's audit log for an auditor.
    ///
    /// Writes the records (JSON Lines), every signed tree head plus one
    /// signed now at the last record, and the cluster CA certificate, so
    /// that `moat audit verify` can check the export alone. OUTPUT is a
    /// new file (one-file bundle) or a new or empty directory (heads.json,
    /// ca.pem, records.jsonl); an existing file is never overwritten.
    Export(AuditExport),
    /// Print an inclusion proof for one record.
    ///
    /// The proof carries the record, its audit path and a signed tree head;
    /// `moat audit verify-proof` checks it with the CA certificate alone.
    /// For an archived record, give the archive with --archive.
    Prove(AuditProve),
    /// Archive the oldest audit records and drop them from the managers.
    ///
    /// Writes the records made before DATE (those up to the first record
    /// at or after DATE) to DIR with a tree head signed at the last of
    /// them, fsyncs it, verifies it, and only then has the cluster drop
    /// them: an `audit.archive` record names the range and the archive's
    /// digest, and every manager deletes the segment files that hold only
    /// archived records. Keep DIR: it is the only copy of those records.
    /// Read and check it later with `moat audit verify --archive DIR`;
    /// prove one of its records with `moat audit prove SEQ --archive DIR`.
    Archive(AuditArchive),
    /// List audit records.
    #[command(visible_alias = "list")]
    Ls(AuditLs),
    /// Print the newest audit records and, with -f, follow new ones.
    Tail(AuditTail),
    /// Compute the keyed hash under which records name a secret.
    ///
    /// Records never hold a secret (a join token, an unlock key); where one
    /// must be correlated they hold `hmac-sha256:…` under the cluster's
    /// audit key. Give the value to find the records that name it. Without
    /// VALUE (or with -), the value is read from standard input, which
    /// keeps it out of the shell history and the process list.
    Hash(AuditHash),
    /// The cluster's crypto inventory, checked against a policy.
    ///
    /// Every node's certificate (algorithm, serial, issuer, expiry, time
    /// left), the root CA, TLS versions and cipher suites, join tokens'
    /// ages, the unlock key and data key versions and ages, and findings
    /// against the policy, each with a severity and a fix. Exits 3 when a
    /// finding is at or above the policy's fail_on severity (default high).
    Report(AuditReport),
}

#[derive(Debug, Args)]
pub(crate) struct AuditExport {
    /// Where to write the bundle: a new file, or a new or empty directory
    /// (an existing directory, or a path ending in /, gets the directory
    /// layout).
    #[arg(long, short = 'o', value_name = "DIR|FILE")]
    pub(crate) output: PathBuf,
    /// Export records from this sequence number on (an earlier export
    /// covers those before it). Default: the first record the managers
    /// keep (1, unless older records were archived).
    #[arg(long, value_name = "SEQ")]
    pub(crate) since: Option<u64>,
    /// Also write the newest signed tree head to FILE, for a later
    /// `moat audit verify --trusted-head FILE` to prove the log only grew.
    #[arg(long, value_name = "FILE")]
    pub(crate) keep_head: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditProve {
    /// The record's sequence number.
    pub(crate) seq: u64,
    /// Write the proof to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// The archive (from `moat audit archive`) holding the record, if it
    /// was archived. The archive is verified first; the proof then leads to
    /// the cluster's current head when the manager still keeps the leaf
    /// hashes of archived records, else to the head stored in the archive
    /// (which needs no manager).
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<PathBuf>,
    /// With --archive: the cluster's root CA certificate(s), PEM, to
    /// verify the archive with (default: the archive's own ca.pem).
    #[arg(long, value_name = "ROOT.crt", requires = "archive")]
    pub(crate) ca: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditLs {
    /// Only records from this sequence number on. Default: the first
    /// record the managers keep (1, unless older records were archived).
    #[arg(long, value_name = "SEQ")]
    pub(crate) since: Option<u64>,
    /// Only this action (e.g. `token.rotate`), or actions starting with
    /// it followed by a dot (`node` for `node.join`, `node.remove`…).
    #[arg(long, value_name = "ACTION")]
    pub(crate) action: Option<String>,
    /// Only records made by this node (an id or a unique id prefix).
    #[arg(long, value_name = "NODE")]
    pub(crate) node: Option<String>,
    /// Output format (json: one record per line, as stored).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArchive {
    /// Archive the records made before this time: RFC 3339
    /// (`2026-01-01T00:00:00Z`) or a day (`2026-01-01`, midnight UTC).
    /// The archive ends before the first record at or after it.
    #[arg(long, value_name = "DATE")]
    pub(crate) before: String,
    /// Where to write the archive: a new or empty directory (never
    /// overwritten).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub(crate) output: PathBuf,
    /// The cluster's root CA certificate(s), PEM, as you obtained them
    /// independently, to verify the archive against before anything is
    /// dropped. Default: the CA certificate the manager sent.
    #[arg(long, value_name = "ROOT.crt")]
    pub(crate) ca: Option<PathBuf>,
    /// Write and verify the archive, but keep the records on the managers.
    #[arg(long)]
    pub(crate) keep: bool,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditTail {
    /// Keep printing new records as they are committed (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// How many of the newest records to print first.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 10)]
    pub(crate) lines: u64,
    /// Output format (json: one record per line, as stored).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditHash {
    /// The value; omit it or give - to read it from standard input.
    pub(crate) value: Option<String>,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct AuditReport {
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::report::ReportFormat::Table)]
    pub(crate) format: crate::report::ReportFormat,
    /// A policy file (TOML) overriding the default thresholds; see
    /// docs/audit-report.md.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Report on a Docker Swarm manager instead, read offline from its
    /// state directory (default /var/lib/docker/swarm; better, a copy of
    /// it): nothing in DIR is changed. Without the unlock key (autolock
    /// on), the report shows what the files alone show and lists what it
    /// could not check. See docs/runbooks/audit-docker-swarm.md.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = DOCKER_SWARM_DIR,
        conflicts_with = "host"
    )]
    pub(crate) docker_swarm: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) swarm_key: SwarmKeyArgs,
    /// With --docker-swarm: also look at a live manager's TLS port
    /// (Swarm's is 2377): versions, cipher suites and key-exchange groups
    /// it accepts, and the certificate chain it presents.
    #[arg(long, value_name = "ADDR:PORT", requires = "docker_swarm")]
    pub(crate) probe: Option<String>,
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

/// Where Docker keeps a Swarm node's state by default.
pub(crate) const DOCKER_SWARM_DIR: &str = "/var/lib/docker/swarm";

/// A Docker Swarm unlock key (`SWMKEY-1-…`), for `--docker-swarm`.
#[derive(Debug, Args)]
pub(crate) struct SwarmKeyArgs {
    /// With --docker-swarm: a file holding the Swarm unlock key
    /// (`docker swarm unlock-key -q`).
    #[arg(
        long = "unlock-key-file",
        value_name = "FILE",
        requires = "docker_swarm"
    )]
    pub(crate) file: Option<PathBuf>,
    /// With --docker-swarm: `-` reads the Swarm unlock key from standard
    /// input (a key on the command line would show in `ps`).
    #[arg(
        long = "unlock-key",
        value_name = "-",
        requires = "docker_swarm",
        conflicts_with = "file"
    )]
    pub(crate) stdin: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerify {
    /// The bundle: a one-file export or an export directory. With
    /// --archive, optional: an export that continues the archive
    /// (`moat audit export --since LAST+1`), checked to start where the
    /// archive ends, with the archive's root.
    #[arg(required_unless_present = "archive")]
    pub(crate) bundle: Option<PathBuf>,
    /// An archive directory written by `moat audit archive`: checks its
    /// manifest, the digest of its records and every record against its
    /// signed tree heads, and prints the digest the cluster recorded for
    /// it (compare with the `audit.archive` record).
    #[arg(long, value_name = "DIR")]
    pub(crate) archive: Option<PathBuf>,
    /// The cluster's root CA certificate(s), PEM, as you obtained them
    /// independently. Default: the copy inside the bundle, which proves
    /// only that the bundle is self-consistent.
    #[arg(long, value_name = "ROOT.crt")]
    pub(crate) ca: Option<PathBuf>,
    /// A signed tree head (JSON) you kept from earlier: checks that the
    /// log was neither truncated nor rewritten since.
    #[arg(long, value_name = "FILE")]
    pub(crate) trusted_head: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerifyProof {
    /// The proof file (JSON).
    #[arg(value_name = "PROOF.json")]
    pub(crate) proof: PathBuf,
    /// The cluster's root CA certificate(s), PEM. A proof file carries no
    /// CA of its own, so this is required.
    #[arg(long, value_name = "ROOT.crt")]
    pub(crate) ca: PathBuf,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Store {
    /// Authenticate every key file, log record, vote and snapshot.
    ///
    /// Exits 0 with a summary when all is well; otherwise exits 1 naming
    /// the first bad file and its offset or log index. Run it on a stopped
    /// manager, or on a backup. With --docker-swarm, a Docker Swarm
    /// manager's raft WAL and snapshots: every CRC-32C, and every record
    /// a data key is at hand for.
    Verify(StoreArgs),
    /// Decrypt the store and print the cluster objects, for forensics.
    ///
    /// The state printed is the snapshot plus every committed log entry
    /// after it. Secrets (the CA key, join tokens, the unlock key, the
    /// audit key) are redacted unless --show-secrets is given. With
    /// --docker-swarm, a Docker Swarm manager's store (nodes, services,
    /// tasks, networks, secrets, configs, the cluster), with its secrets,
    /// keys, credentials and environment values redacted the same way.
    Dump {
        #[command(flatten)]
        store: StoreArgs,
        /// Print secret fields instead of redacting them.
        #[arg(long)]
        show_secrets: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// The node's state directory (the store is in DIR/store).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "docker_swarm",
        conflicts_with = "docker_swarm"
    )]
    pub(crate) state_dir: Option<PathBuf>,
    /// File holding the unlock key (mode 0600). Default: DIR/unlock.key,
    /// where a node keeps it while autolock is off. With --docker-swarm,
    /// the Swarm unlock key (`SWMKEY-1-…`).
    #[arg(long, value_name = "FILE")]
    pub(crate) unlock_key_file: Option<PathBuf>,
    /// With --docker-swarm: `-` reads the Swarm unlock key from standard
    /// input.
    #[arg(
        long,
        value_name = "-",
        requires = "docker_swarm",
        conflicts_with = "unlock_key_file"
    )]
    pub(crate) unlock_key: Option<String>,
    /// Read a Docker Swarm manager's state directory instead (default
    /// /var/lib/docker/swarm; better, a copy): its raft store, rebuilt as
    /// SwarmKit does, with the current and any pending data key. Nothing
    /// in DIR is changed.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 0..=1,
        default_missing_value = DOCKER_SWARM_DIR
    )]
    pub(crate) docker_swarm: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cert {
    /// Show what a certificate or PEM bundle contains.
    ///
    /// Prints subject, issuer, serial, validity, key and signature
    /// algorithms, SHA-256 fingerprint, subject alternative names, whether
    /// it is a CA, and the moat node identity its subject names. Nothing is
    /// verified: use it to look, not to trust.
    Inspect(CertInspect),
}

#[derive(Debug, Args)]
pub(crate) struct CertInspect {
    /// A PEM file (one or more certificates) or a DER certificate; `-` reads
    /// standard input.
    pub(crate) path: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Token {
    /// Check a join token offline and show what it pins.
    ///
    /// Prints the format version, the SHA-256 digest of the root CA bundle
    /// the token pins, its fingerprint (the id used in logs and audit
    /// records) and whether its checksum is valid. The secret part is never
    /// printed. Pass `-` to read the token from standard input, which keeps
    /// it out of your shell history.
    Inspect(TokenInspect),
}

#[derive(Debug, Args)]
pub(crate) struct TokenInspect {
    /// The join token (MOATTKN-1-…), or `-` to read it from standard input.
    pub(crate) token: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

/// Which daemon to talk to.
#[derive(Debug, Clone, Args)]
pub(crate) struct HostArgs {
    /// The daemon's control socket: unix:///path/to/moat.sock. Before the
    /// command or after it: `moat -H HOST node ls`, `moat node ls -H HOST`.
    #[arg(
        long = "host",
        short = 'H',
        env = "MOAT_HOST",
        value_name = "HOST",
        default_value_t = Host::default(),
        global = true,
    )]
    pub(crate) host: Host,
}

#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// Where the node keeps its identity, keys and store (created mode
    /// 0700 if missing).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/moat")]
    pub(crate) state_dir: PathBuf,
    /// The control API socket. Default: DIR/moat.sock.
    #[arg(long, value_name = "PATH")]
    pub(crate) control_socket: Option<PathBuf>,
    /// The host name this node reports. Default: the machine's. ASCII
    /// letters, digits and hyphens, dots between labels (RFC 1123); any
    /// other name is refused.
    #[arg(long, value_name = "NAME")]
    pub(crate) hostname: Option<String>,
    /// Unlock this manager at start with the key in FILE (mode 0600 or
    /// stricter; first line), for unattended restarts with autolock on.
    #[arg(long, value_name = "FILE", conflicts_with = "unlock_key_fd")]
    pub(crate) unlock_key_file: Option<PathBuf>,
    /// Like --unlock-key-file, reading the key from an open file
    /// descriptor (e.g. a pipe from a secrets manager).
    #[arg(long, value_name = "FD")]
    pub(crate) unlock_key_fd: Option<u32>,
    /// Serve Prometheus metrics (plain HTTP, GET /metrics) on ADDRESS:PORT:
    /// certificate and root CA expiry, join token ages, raft term, leader
    /// and commit index, locked state, audit log size, failed unlocks.
    /// Off by default; bind it to a private address.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub(crate) metrics_addr: Option<String>,
    /// The Docker Engine API for tasks of runtime `docker`, e.g.
    /// unix:///var/run/docker.sock. Default: DOCKER_HOST, else the
    /// engine's usual socket.
    #[arg(long, value_name = "URL")]
    pub(crate) docker_host: Option<String>,
    /// A directory on a tmpfs where tasks' secrets and configs are kept
    /// (they never touch a disk), in the daemon's own subdirectory
    /// DIR/moat-<node id>; nothing else in DIR is touched. Default:
    /// /dev/shm. A task with secrets is rejected if DIR is not a tmpfs.
    #[arg(long, value_name = "DIR")]
    pub(crate) secrets_dir: Option<PathBuf>,
    /// For tests only: run this daemon's clock DURATION ahead of the
    /// system's (certificates, tokens and liveness see that time). Hidden;
    /// the daemon logs a warning when it is set.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, hide = true)]
    pub(crate) danger_clock_ahead: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct UnlockArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UnlockKeyArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Replace the unlock key with a new one.
    #[arg(long)]
    pub(crate) rotate: bool,
    /// Print only the key (or, with --split, only the shares, one per line).
    #[arg(long, short, conflicts_with = "format")]
    pub(crate) quiet: bool,
    /// Print the key as N shares of which any K unlock a manager (Shamir
    /// secret sharing; 2 <= K <= N <= 16), instead of the key itself.
    #[arg(long, value_name = "K/N", value_parser = parse_split)]
    pub(crate) split: Option<(u8, u8)>,
    /// Output format (json: the key, or with --split the shares).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Where to listen for cluster traffic (port 0: any free port).
    /// Default: 0.0.0.0:4377, or with --force-new-cluster the node's own.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen_addr: Option<String>,
    /// The address other nodes use to reach this one. Default: the listen
    /// address, or the host's only non-loopback address when listening on
    /// 0.0.0.0 (with several, give this option).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) advertise_addr: Option<String>,
    #[arg(long, value_name = "DURATION", value_parser = parse_cert_expiry,
          help = cert_expiry_help("Lifetime of node certificates (default 24h)"))]
    pub(crate) cert_expiry: Option<Duration>,
    /// Encrypt the managers' keys with an unlock key that the operator must
    /// give each manager after it restarts.
    #[arg(long)]
    pub(crate) autolock: bool,
    /// Make this manager the only manager of its cluster, keeping all of
    /// the cluster's state: after `moat restore`, or when a quorum of
    /// managers is lost for good. The other managers must not come back.
    #[arg(long)]
    pub(crate) force_new_cluster: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Where to write the backup (written atomically, mode 0600).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
    /// Encrypt to this age recipient (age1…; repeatable). `moat backup
    /// keygen` makes a key pair.
    #[arg(long = "recipient", short = 'r', value_name = "AGE_RECIPIENT")]
    pub(crate) recipients: Vec<String>,
    /// Encrypt with a passphrase (asked on the terminal, or the first line
    /// of standard input).
    #[arg(long, conflicts_with = "recipients")]
    pub(crate) passphrase: bool,
    /// Write the backup unencrypted (it holds the cluster's keys; with
    /// autolock off, the key that opens them too).
    #[arg(long, conflicts_with_all = ["recipients", "passphrase"])]
    pub(crate) insecure_plaintext: bool,
    #[command(subcommand)]
    pub(crate) action: Option<BackupAction>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BackupAction {
    /// Verify a backup and show what it holds, without restoring it.
    Inspect(BackupInspect),
    /// Make an age key pair for backups: writes the identity (secret) to
    /// FILE (mode 0600) and prints the recipient to give `--recipient`.
    Keygen {
        /// Where to write the identity file.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
}

/// How to open a backup.
#[derive(Debug, Args)]
pub(crate) struct Unprotect {
    /// An age identity file holding the secret key of one of the backup's
    /// recipients.
    #[arg(long, short = 'i', value_name = "KEYFILE")]
    pub(crate) identity: Option<PathBuf>,
    /// The backup was made with --passphrase (asked on the terminal, or the
    /// first line of standard input).
    #[arg(long, conflicts_with = "identity")]
    pub(crate) passphrase: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BackupInspect {
    /// The backup file.
    pub(crate) file: PathBuf,
    #[command(flatten)]
    pub(crate) unprotect: Unprotect,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The backup file.
    pub(crate) file: PathBuf,
    /// The state directory to create (it must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: PathBuf,
    #[command(flatten)]
    pub(crate) unprotect: Unprotect,
    /// The address the restored manager will advertise (default: the one
    /// in the backup). `moat init --force-new-cluster` can change it too.
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) advertise_addr: Option<String>,
    /// Where it will listen (default: 0.0.0.0 at the advertised port).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) listen_addr: Option<String>,
    /// Check, before writing anything, that the unlock key in FILE (mode
    /// 0600) opens the backup (autolock was on when it was taken).
    #[arg(long, value_name = "FILE")]
    pub(crate) unlock_key_file: Option<PathBuf>,
    /// The cluster the backup must come from (its id, as `moat info`
    /// prints it): a backup signed by a manager of any other cluster, or an
    /// unsigned one, is refused. This or --trust-any-cluster is required.
    #[arg(long, value_name = "ID", conflicts_with = "trust_any_cluster")]
    pub(crate) expect_cluster: Option<String>,
    /// Also require the backup's signer to chain to this root CA
    /// (`sha256:…`, as `moat ca` prints it).
    #[arg(long, value_name = "FINGERPRINT", requires = "expect_cluster")]
    pub(crate) expect_root: Option<String>,
    /// Restore a backup of whatever cluster signed it, or an unsigned
    /// (format 1) backup: you vouch for where the file came from.
    #[arg(long)]
    pub(crate) trust_any_cluster: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JoinArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// The join token, read from the environment variable MOAT_JOIN_TOKEN
    /// when this option is not given. `-` reads one line from standard
    /// input. A token written here (MOATTKN-1-…) works, with a warning:
    /// other users of this machine can read it in `ps`.
    #[arg(long, value_name = "TOKEN|-")]
    pub(crate) token: Option<String>,
    /// Where to listen for cluster traffic (port 0: any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN_ADDR)]
    pub(crate) listen_addr: String,
    /// The address other nodes use to reach this one. Default: the listen
    /// address, or the host's only non-loopback address when listening on
    /// 0.0.0.0 (with several, give this option).
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) advertise_addr: Option<String>,
    /// Keep this node's identity: rejoin after its certificate expired
    /// while it was down.
    #[arg(long)]
    pub(crate) rejoin: bool,
    /// A manager's cluster address.
    #[arg(value_name = "HOST:PORT")]
    pub(crate) remote_addr: String,
}

#[derive(Debug, Args)]
pub(crate) struct JoinTokenArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Replace the token first; the old one stops working at once (nodes
    /// that already joined are not affected).
    #[arg(long)]
    pub(crate) rotate: bool,
    /// Print only the token.
    #[arg(long, short, conflicts_with = "format")]
    pub(crate) quiet: bool,
    /// Output format (json: the token, its role, the address to join and
    /// the join command).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// Which token.
    #[arg(value_enum)]
    pub(crate) role: Option<RoleArg>,
    #[command(subcommand)]
    pub(crate) action: Option<TokenAction>,
}

/// Scoped join tokens: extra tokens with a lifetime, a use limit and labels.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Create a join token with limits (kept in the encrypted store).
    ///
    /// Prints the join command (or, with -q, only the token). The token's
    /// id — its fingerprint, not secret — names it in `ls`, `revoke` and
    /// the logs.
    Create(TokenCreateArgs),
    /// List join tokens by id, never showing a secret.
    Ls(TokenLsArgs),
    /// Revoke a scoped join token by id (or a unique prefix).
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TokenCreateArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// The role the token grants.
    #[arg(long, value_enum)]
    pub(crate) role: RoleArg,
    /// How long it works, e.g. `1h`, `7days` (at most one year).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) ttl: Option<Duration>,
    /// How many nodes may join with it.
    #[arg(long, value_name = "N")]
    pub(crate) uses: Option<u32>,
    /// A label every node joining with it receives (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) labels: Vec<(String, String)>,
    /// What the token is for.
    #[arg(long, default_value = "")]
    pub(crate) description: String,
    /// Print only the token.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct TokenLsArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct TokenRevokeArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// The token's id, or a unique prefix of it.
    pub(crate) id: String,
}

#[derive(Debug, Args)]
pub(crate) struct LeaveArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Leave even without the other managers' agreement or, on the last
    /// manager, erasing the cluster.
    #[arg(long, short)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    #[arg(long, value_name = "DURATION", value_parser = parse_cert_expiry,
          help = cert_expiry_help("Lifetime of node certificates; nodes get it at their next renewal"))]
    pub(crate) cert_expiry: Option<Duration>,
    /// Give the two standing join tokens a lifetime, e.g. `24h`; each is
    /// rotated automatically when it passes. `none` removes the lifetime.
    #[arg(long, value_name = "DURATION|none", value_parser = parse_ttl)]
    pub(crate) token_ttl: Option<Duration>,
    /// Turn autolock on (`--autolock` or `--autolock=true`) or off
    /// (`--autolock=false`).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
    )]
    pub(crate) autolock: Option<bool>,
}

#[derive(Debug, Args)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Node {
    /// List the cluster's nodes; `*` marks the node answering.
    #[command(visible_alias = "list")]
    Ls(NodeLs),
    /// Show one node in detail.
    Inspect(NodeInspect),
    /// Make workers managers.
    Promote(NodeNames),
    /// Make managers workers.
    Demote(NodeNames),
    /// Remove nodes from the cluster.
    ///
    /// A node that is still up, or a manager, is removed only with
    /// --force; its certificate is then no longer accepted.
    #[command(visible_alias = "remove")]
    Rm(NodeRm),
    /// Change a node's labels or availability.
    Update(NodeUpdate),
    /// List the tasks on a node (default: the node answering).
    Ps(NodePs),
}

#[derive(Debug, Args)]
pub(crate) struct NodePs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// A node id, a unique prefix of one, a host name, or `self`.
    #[arg(value_name = "NODE", default_value = "self")]
    pub(crate) node: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Service {
    /// Create a service and wait until its tasks run.
    ///
    /// Prints the service's id. Without --detach, waits until every task
    /// runs, or stops at the first one that fails to start, showing the
    /// progress on standard error.
    Create(Box<ServiceCreate>),
    /// List services.
    #[command(visible_alias = "list")]
    Ls(ServiceLs),
    /// List the tasks of a service, the newest of each slot first.
    Ps(ServicePs),
    /// Show a service in detail.
    Inspect(ServiceInspect),
    /// Change the replica count of services: `moat service scale web=5`.
    Scale(ServiceScale),
    /// Change a service; its tasks are replaced in a rolling update.
    Update(Box<ServiceUpdate>),
    /// Go back to a service's previous spec.
    Rollback(ServiceRollback),
    /// Remove services and stop their tasks.
    #[command(visible_alias = "remove")]
    Rm(ServiceRm),
    /// Print the output of a service's tasks, gathered from their nodes.
    Logs(ServiceLogs),
}

/// `moat secret …` and `moat config …`.
#[derive(Debug, Subcommand)]
pub(crate) enum Secret {
    /// Create one from FILE, or from standard input with `-` (at most
    /// 500 KiB). Prints its id.
    Create(SecretCreate),
    /// Give one a new version from FILE or `-`. The services that use it
    /// without a pinned version (`--secret NAME`) roll onto it with their
    /// update policy; pinned ones (`NAME@VERSION`) stay.
    Update(SecretUpdate),
    /// List them, with their versions and the services that use them.
    #[command(visible_alias = "list")]
    Ls(SecretLs),
    /// Show one: its versions, their sizes and keyed digests, and which
    /// services and tasks use them (a secret's data never; a config's,
    /// yes).
    Inspect(SecretInspect),
    /// Remove them; refused while a service uses one.
    #[command(visible_alias = "remove")]
    Rm(SecretRm),
}

#[derive(Debug, Args)]
pub(crate) struct SecretCreate {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Label (`key=value`); repeatable.
    #[arg(long, short, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) label: Vec<(String, String)>,
    /// Its name: letters, digits, '-', '_' and '.', at most 64.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// The file to read, or `-` for standard input.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SecretUpdate {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Its name, id or a unique id prefix.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// The file to read, or `-` for standard input.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct SecretLs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Print only ids.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct SecretInspect {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// Its name, id or a unique id prefix.
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct SecretRm {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Names, ids or unique id prefixes.
    #[arg(value_name = "NAME", required = true)]
    pub(crate) names: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceLogs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Only the last BYTES of each task's output (at most 1 MiB per task
    /// is relayed).
    #[arg(long, value_name = "BYTES")]
    pub(crate) tail_bytes: Option<u64>,
    /// Output format (json: one object per task).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// A service id, a unique prefix of one, or a name.
    #[arg(value_name = "SERVICE")]
    pub(crate) service: String,
}

/// How a service's tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RuntimeArg {
    /// A child process of the node's daemon, in its own process group.
    Process,
    /// A container through the node's Docker Engine.
    Docker,
}

/// Replicated (N tasks) or global (one per eligible node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    /// --replicas tasks, spread over the nodes.
    Replicated,
    /// One task on every node that passes the constraints.
    Global,
}

/// When a task that ended is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RestartConditionArg {
    /// Always.
    Any,
    /// When it failed (non-zero exit status, rejected, node lost).
    OnFailure,
    /// Never.
    None,
}

/// What a rolling update does when a new task fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FailureActionArg {
    /// Stop the update.
    Pause,
    /// Go back to the previous spec.
    Rollback,
}

/// Placement, restart and update flags, shared by `create` and `update`.
#[derive(Debug, Args)]
pub(crate) struct ServiceFlags {
    /// Number of tasks (replicated mode).
    #[arg(long, value_name = "N")]
    pub(crate) replicas: Option<u64>,
    /// Placement constraint, as Docker writes them: node.labels.KEY==VALUE,
    /// node.role==manager, node.hostname!=NAME, node.id==ID; repeatable,
    /// all must hold. (`update`: replaces the service's list.)
    #[arg(long, value_name = "EXPR")]
    pub(crate) constraint: Vec<String>,
    /// Spread tasks over the values of a node label first:
    /// spread=node.labels.KEY; repeatable.
    #[arg(long, value_name = "PREF")]
    pub(crate) placement_pref: Vec<String>,
    /// When to replace a task that ended.
    #[arg(long, value_enum, value_name = "CONDITION")]
    pub(crate) restart_condition: Option<RestartConditionArg>,
    /// Wait between a task's end and its replacement (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub(crate) restart_delay: Option<Duration>,
    /// Replace one slot's task at most N times (0: no limit).
    #[arg(long, value_name = "N")]
    pub(crate) restart_max_attempts: Option<u64>,
    /// Tasks replaced at once in a rolling update (0: all; default 1).
    #[arg(long, value_name = "N")]
    pub(crate) update_parallelism: Option<u64>,
    /// Wait between two batches of a rolling update (default 0s).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub(crate) update_delay: Option<Duration>,
    /// What to do when a new task fails during an update (default pause).
    #[arg(long, value_enum, value_name = "ACTION")]
    pub(crate) update_failure_action: Option<FailureActionArg>,
    /// How long a new task must run before its batch counts as done
    /// (default 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub(crate) update_monitor: Option<Duration>,
    /// Time between SIGTERM and SIGKILL when a task stops (default 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub(crate) stop_grace_period: Option<Duration>,
    /// Lifetime of each task's workload certificate
    /// (spiffe://CLUSTER/service/NAME), 5m to 24h (default 1h); renewed at
    /// half of it. (`update`: also turns an identity back on.)
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    pub(crate) identity_ttl: Option<Duration>,
    /// Give the tasks no workload identity: no certificate, no Workload
    /// API socket.
    #[arg(long, conflicts_with = "identity_ttl")]
    pub(crate) no_identity: bool,
    /// Return at once instead of waiting for the tasks.
    #[arg(long, short)]
    pub(crate) detach: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceCreate {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// The service's name (default: one made from its id).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    /// Replicated (default) or global.
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) mode: Option<ModeArg>,
    /// How tasks run (default process).
    #[arg(long, value_enum, value_name = "RUNTIME")]
    pub(crate) runtime: Option<RuntimeArg>,
    /// Environment variable of every task (NAME=VALUE); repeatable.
    #[arg(long, short, value_name = "NAME=VALUE")]
    pub(crate) env: Vec<String>,
    /// Service label (`key=value`); repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) label: Vec<(String, String)>,
    /// A secret its tasks get: NAME[@VERSION][,target=FILE][,mode=0400]
    /// (or source=NAME,…). Without @VERSION it follows the secret's new
    /// versions; repeatable.
    #[arg(long, value_name = "SPEC")]
    pub(crate) secret: Vec<String>,
    /// A config its tasks get: NAME[@VERSION][,target=FILE][,mode=0444];
    /// repeatable.
    #[arg(long, value_name = "SPEC")]
    pub(crate) config: Vec<String>,
    #[command(flatten)]
    pub(crate) flags: ServiceFlags,
    /// The program (runtime process: a path, or a name in the daemon's
    /// PATH) or image (runtime docker).
    #[arg(value_name = "IMAGE_OR_PROGRAM")]
    pub(crate) image: String,
    /// Its arguments.
    #[arg(
        value_name = "ARG",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) args: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceLs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Print only service ids.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ServicePs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// Only the tasks that should be running (no history).
    #[arg(long)]
    pub(crate) running: bool,
    /// A service id, a unique prefix of one, or a name.
    #[arg(value_name = "SERVICE")]
    pub(crate) service: String,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceInspect {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// A service id, a unique prefix of one, or a name.
    #[arg(value_name = "SERVICE")]
    pub(crate) service: String,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceScale {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Return at once instead of waiting for the tasks.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// SERVICE=REPLICAS pairs.
    #[arg(value_name = "SERVICE=N", required = true, value_parser = parse_scale)]
    pub(crate) scales: Vec<(String, u64)>,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceUpdate {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// A new image or program.
    #[arg(long, value_name = "IMAGE")]
    pub(crate) image: Option<String>,
    /// New arguments, split at white space: --args "-c 'sleep 5'" is not
    /// shell-parsed.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub(crate) args: Option<String>,
    /// Add or replace an environment variable (NAME=VALUE); repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    pub(crate) env_add: Vec<String>,
    /// Remove an environment variable; repeatable.
    #[arg(long, value_name = "NAME")]
    pub(crate) env_rm: Vec<String>,
    /// Add a placement constraint; repeatable.
    #[arg(long, value_name = "EXPR")]
    pub(crate) constraint_add: Vec<String>,
    /// Remove a placement constraint; repeatable.
    #[arg(long, value_name = "EXPR")]
    pub(crate) constraint_rm: Vec<String>,
    /// Add a secret (NAME[@VERSION][,target=FILE][,mode=0400]);
    /// repeatable.
    #[arg(long, value_name = "SPEC")]
    pub(crate) secret_add: Vec<String>,
    /// Remove a secret (its name or target); repeatable. Applied before
    /// --secret-add.
    #[arg(long, value_name = "NAME")]
    pub(crate) secret_rm: Vec<String>,
    /// Add a config (NAME[@VERSION][,target=FILE][,mode=0444]);
    /// repeatable.
    #[arg(long, value_name = "SPEC")]
    pub(crate) config_add: Vec<String>,
    /// Remove a config (its name or target); repeatable.
    #[arg(long, value_name = "NAME")]
    pub(crate) config_rm: Vec<String>,
    /// Replace every task even if nothing changed.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) flags: ServiceFlags,
    /// A service id, a unique prefix of one, or a name.
    #[arg(value_name = "SERVICE")]
    pub(crate) service: String,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceRollback {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Return at once instead of waiting for the tasks.
    #[arg(long, short)]
    pub(crate) detach: bool,
    /// A service id, a unique prefix of one, or a name.
    #[arg(value_name = "SERVICE")]
    pub(crate) service: String,
}

#[derive(Debug, Args)]
pub(crate) struct ServiceRm {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Service ids, unique prefixes of them, or names.
    #[arg(value_name = "SERVICE", required = true)]
    pub(crate) services: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NodeLs {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Print only node ids.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct NodeInspect {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub(crate) format: Format,
    /// A node id, a unique prefix of one, a host name, or `self`.
    #[arg(value_name = "NODE")]
    pub(crate) node: String,
}

#[derive(Debug, Args)]
pub(crate) struct NodeNames {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Node ids, unique prefixes of them, host names, or `self`.
    #[arg(value_name = "NODE", required = true)]
    pub(crate) nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NodeRm {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Remove a node that is still up, or a manager (demoting it first).
    #[arg(long, short)]
    pub(crate) force: bool,
    /// Node ids, unique prefixes of them, host names, or `self`.
    #[arg(value_name = "NODE", required = true)]
    pub(crate) nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct NodeUpdate {
    #[command(flatten)]
    pub(crate) host: HostArgs,
    /// Add or replace a label (`key=value`, or `key` for an empty value);
    /// repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub(crate) label_add: Vec<(String, String)>,
    /// Remove a label; repeatable.
    #[arg(long, value_name = "KEY")]
    pub(crate) label_rm: Vec<String>,
    /// Whether the scheduler may use the node.
    #[arg(long, value_enum)]
    pub(crate) availability: Option<AvailabilityArg>,
    /// A node id, a unique prefix of one, a host name, or `self`.
    #[arg(value_name = "NODE")]
    pub(crate) node: String,
}

impl NodeUpdate {
    /// The labels to add, as the API takes them.
    pub(crate) fn label_map(&self) -> BTreeMap<String, String> {
        self.label_add.iter().cloned().collect()
    }
}

#[derive(Debug, Args)]
pub(crate) struct DevArgs {
    /// How many managers (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=9))]
    pub(crate) managers: u16,
    /// How many workers.
    #[arg(long, value_name = "M", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(0..=50))]
    pub(crate) workers: u16,
    /// Keep the nodes' state directories in DIR (kept on exit). Default:
    /// a new temporary directory, removed on exit.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Serve each node's Prometheus metrics on 127.0.0.1, from PORT up:
    /// PORT for manager-1, PORT+1 for the next node, and so on.
    #[arg(long, value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1024..=65000))]
    pub(crate) metrics_port: Option<u16>,
    #[command(subcommand)]
    pub(crate) command: Option<DevCommand>,
}

/// What `moat dev` does to a running dev cluster (from another terminal).
#[derive(Debug, Subcommand)]
pub(crate) enum DevCommand {
    /// Start a node of a running `moat dev` cluster again, after its
    /// daemon exited or was killed.
    ///
    /// The node comes back with its state directory as it left it and
    /// rejoins the cluster, as a restarted machine would. The `moat dev`
    /// process runs it, so Ctrl-C there still stops everything.
    Restart(DevRestart),
}

#[derive(Debug, Args)]
pub(crate) struct DevRestart {
    /// The node, as `moat dev` names it: manager-1, worker-2, …
    #[arg(value_name = "NAME")]
    pub(crate) name: String,
    /// The running cluster's directory, as `moat dev` printed it. Default:
    /// the one `moat dev` cluster running under the temporary directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

/// A node role, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RoleArg {
    /// The token that joins workers.
    Worker,
    /// The token that joins managers.
    Manager,
}

impl From<RoleArg> for moat_api::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Worker => moat_api::Role::Worker,
            RoleArg::Manager => moat_api::Role::Manager,
        }
    }
}

/// A node availability, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AvailabilityArg {
    /// The scheduler may use the node.
    Active,
    /// No new work goes to the node.
    Pause,
    /// No work at all stays on the node.
    Drain,
}

impl From<AvailabilityArg> for moat_api::Availability {
    fn from(a: AvailabilityArg) -> Self {
        match a {
            AvailabilityArg::Active => moat_api::Availability::Active,
            AvailabilityArg::Pause => moat_api::Availability::Pause,
            AvailabilityArg::Drain => moat_api::Availability::Drain,
        }
    }
}

/// Where `init` and `join` listen by default (moat's cluster port).
pub(crate) const DEFAULT_LISTEN_ADDR: &str = "0.0.0.0:4377";

/// A lifetime, or `none` (zero) to remove one.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    match s {
        "none" | "0" => Ok(Duration::ZERO),
        _ => parse_duration(s),
    }
}

/// `K/N`: a split of the unlock key.
fn parse_split(text: &str) -> Result<(u8, u8), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not K/N (e.g. 3/5)"))?;
    let k: u8 = k
        .trim()
        .parse()
        .map_err(|_| format!("{k:?} is not a number"))?;
    let n: u8 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a number"))?;
    if !(2 <= k && k <= n && n <= 16) {
        return Err(format!("need 2 <= K <= N <= 16, got {k}/{n}"));
    }
    Ok((k, n))
}

/// `24h`, `90m`, `1day 12h`: a whole number of seconds, at least one.
fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_checked(s, whole_seconds)
}

fn whole_seconds(d: Duration) -> Result<Duration, String> {
    if d.as_secs() == 0 || d.subsec_nanos() != 0 {
        return Err("give a whole number of seconds, at least 1s (e.g. 24h, 90m)".into());
    }
    Ok(d)
}

/// `--cert-expiry`: a lifetime the daemon accepts, checked here by the
/// daemon's own check ([`moat_pki::CertExpiry::new`]), so that one range
/// holds everywhere.
pub(crate) fn parse_cert_expiry(s: &str) -> Result<Duration, String> {
    parse_checked(s, |d| {
        let d = moat_pki::CertExpiry::new(d)
            .map_err(|_| format!("{} is out of range: give {}", s.trim(), cert_expiry_range()))?;
        whole_seconds(d.duration())
    })
}

/// `1m to 365d`: the lifetimes `--cert-expiry` takes, written from the
/// constants the daemon checks.
pub(crate) fn cert_expiry_range() -> String {
    format!(
        "{} to {}",
        moat_pki::compact_duration(moat_pki::CertExpiry::MIN),
        moat_pki::compact_duration(moat_pki::CertExpiry::MAX)
    )
}

/// The help of a `--cert-expiry` flag: `what`, then the accepted range.
fn cert_expiry_help(what: &str) -> String {
    format!(
        "{what}: {}, e.g. `24h`, `90m`, `30days`",
        cert_expiry_range()
    )
}

/// A duration as humantime reads it, then `check`ed. A number without a
/// unit (`48`) is refused with a suggestion that `check` accepts (`48h`),
/// never one it would refuse (humantime's own says `48ms`).
fn parse_checked(
    s: &str,
    check: impl Fn(Duration) -> Result<Duration, String>,
) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) => check(d),
        Err(humantime::DurationError::UnknownUnit { unit, value, .. }) => {
            let what = if unit.is_empty() {
                format!("{value} needs a unit")
            } else {
                format!("unknown unit {unit:?} (use s, m, h or d)")
            };
            let fits = ["h", "m", "d", "s"]
                .iter()
                .map(|u| format!("{value}{u}"))
                .find(|g| humantime::parse_duration(g).is_ok_and(|d| check(d).is_ok()))
                .unwrap_or_else(|| "24h".into());
            Err(format!("{what}, e.g. {fits}"))
        }
        Err(e) => Err(format!("{e}: give a duration like 24h, 90m or 30days")),
    }
}

/// A duration that may be zero or below a second (`0s`, `500ms`, `5s`).
fn parse_span(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: give a duration like 500ms, 5s or 1m"))
}

/// `SERVICE=N`.
fn parse_scale(s: &str) -> Result<(String, u64), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SERVICE=REPLICAS"))?;
    if name.is_empty() {
        return Err(format!("{s:?} names no service: write SERVICE=REPLICAS"));
    }
    let n = n
        .parse::<u64>()
        .map_err(|_| format!("{s:?}: the replica count must be a whole number"))?;
    Ok((name.to_owned(), n))
}

/// `key=value`, or `key` alone for an empty value.
fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.is_empty() {
        return Err("a label needs a key: key=value".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned `Key: value` lines for people.
    Table,
    /// JSON for programs.
    Json,
}
