//! The `moat` command line: parses arguments, calls the libraries, prints.
//!
//! No business logic lives here. Errors print as `moat: <what happened>`
//! with the cause chain, then a `hint:` line saying what to do; exit codes
//! are 0 (success), 1 (the command failed) and 2 (usage error, from clap).
//! A closed pipe on standard output ends the command quietly with success.
//!
//! Offline commands (`cert`, `token`, `store`, `audit`) read files; cluster
//! commands (`init`, `join`, `node …`, …) are requests to a daemon's
//! control API (moat-api) over its unix socket (`--host`, `MOAT_HOST`);
//! `daemon` runs a node (moat-node) and `dev` runs several as children.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod audit;
mod backup;
mod ca;
mod cert;
mod client;
mod cluster;
mod completion;
mod daemon;
mod dev;
mod harden;
mod lock;
mod node;
mod output;
mod render;
mod report;
mod secret;
mod service;
mod store;
mod swarm;
mod token;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Audit, Cert, Cli, Command, Node, Service, Store, Token};
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
        Command::Daemon(args) => daemon::run(args),
        Command::Init(args) => cluster::init(&args),
        Command::Join(args) => cluster::join(&args),
        Command::JoinToken(args) => cluster::join_token(&args),
        Command::Leave(args) => cluster::leave(&args),
        Command::Update(args) => cluster::update(&args),
        Command::Backup(args) => backup::backup(&args),
        Command::Restore(args) => backup::restore(&args),
        Command::Unlock(args) => lock::unlock(&args),
        Command::UnlockKey(args) => lock::unlock_key(&args),
        Command::Info(args) => cluster::info(&args),
        Command::Node { command } => match command {
            Node::Ls(args) => node::ls(&args),
            Node::Inspect(args) => node::inspect(&args),
            Node::Promote(args) => node::promote(&args),
            Node::Demote(args) => node::demote(&args),
            Node::Rm(args) => node::rm(&args),
            Node::Update(args) => node::update(&args),
            Node::Ps(args) => service::node_ps(&args),
        },
        Command::Service { command } => match command {
            Service::Create(args) => service::create(&args),
            Service::Ls(args) => service::ls(&args),
            Service::Ps(args) => service::ps(&args),
            Service::Inspect(args) => service::inspect(&args),
            Service::Scale(args) => service::scale(&args),
            Service::Update(args) => service::update(&args),
            Service::Rollback(args) => service::rollback(&args),
            Service::Rm(args) => service::rm(&args),
            Service::Logs(args) => service::logs(&args),
        },
        Command::Secret { command } => secret::run("secret", &command),
        Command::Config { command } => secret::run("config", &command),
        Command::Dev(args) => dev::run(&args),
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
        Command::Ca(args) => ca::run(&args),
        Command::Audit { command } => match command {
            Audit::Verify(args) => audit::verify(&args),
            Audit::VerifyProof(args) => audit::verify_proof(&args),
            Audit::Export(args) => audit::export(&args),
            Audit::Prove(args) => audit::prove(&args),
            Audit::Archive(args) => audit::archive(&args),
            Audit::Ls(args) => audit::ls(&args),
            Audit::Tail(args) => audit::tail(&args),
            Audit::Hash(args) => audit::hash(&args),
            Audit::Report(args) => match &args.docker_swarm {
                Some(dir) => swarm::report(dir, &args),
                None => audit::report(&args),
            },
        },
        Command::Completion(args) => completion::completion(&args),
        Command::Man(args) => completion::man(&args),
    }
}
