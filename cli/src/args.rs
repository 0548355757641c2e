//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// moat: a secure swarm.
///
/// Managers run the cluster's certificate authority and its encrypted,
/// replicated store; every connection between nodes is mutual TLS 1.3.
#[derive(Debug, Parser)]
#[command(name = "moat", version, propagate_version = true)]
#[command(after_help = "Run 'moat help <command>' for more on a command.")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
}

#[derive(Debug, Subcommand)]
pub(crate) enum Store {
    /// Authenticate every key file, log record, vote and snapshot.
    ///
    /// Exits 0 with a summary when all is well; otherwise exits 1 naming
    /// the first bad file and its offset or log index. Run it on a stopped
    /// manager, or on a backup.
    Verify(StoreArgs),
    /// Decrypt the store and print the cluster objects, for forensics.
    ///
    /// The state printed is the snapshot plus every committed log entry
    /// after it. Secrets (the CA key, join tokens, the unlock key) are
    /// redacted unless --show-secrets is given.
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
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: PathBuf,
    /// File holding the unlock key (mode 0600). Default: DIR/unlock.key,
    /// where a node keeps it while autolock is off.
    #[arg(long, value_name = "FILE")]
    pub(crate) unlock_key_file: Option<PathBuf>,
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

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned `Key: value` lines for people.
    Table,
    /// JSON for programs.
    Json,
}
