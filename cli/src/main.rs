//! The `moat` command line: parses arguments, calls the libraries, prints.
//!
//! No business logic lives here. Errors print as `moat: <what happened>`
//! with the cause chain, then a `hint:` line saying what to do; exit codes
//! are 0 (success), 1 (the command failed) and 2 (usage error, from clap).
//! A closed pipe on standard output ends the command quietly with success.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod cert;
mod output;
mod store;
mod token;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cert, Cli, Command, Store, Token};
use crate::output::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Cert { command } => match command {
            Cert::Inspect(args) => cert::inspect(&args),
        },
        Command::Token { command } => match command {
            Token::Inspect(args) => token::inspect(&args),
        },
        Command::Store { command } => match command {
            Store::Verify(args) => store::verify(&args),
            Store::Dump {
                store: args,
                show_secrets,
            } => store::dump(&args, show_secrets),
        },
    }
}
