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
