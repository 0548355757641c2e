//! `moat init`, `join`, `join-token`, `leave`, `update` and `info`: the
//! cluster as a whole, through the local daemon's control API.

use std::io::{self, Write};

use moat_api::{
    CreateTokenRequest, CreateTokenResponse, Empty, Info, InitRequest, InitResponse, JoinRequest,
    JoinResponse, JoinTokenRequest, JoinTokenResponse, LeaveRequest, SecretString, TokenRef,
    TokenSummary, UpdateRequest, UpdateResponse, path,
};
use moat_tokens::JoinToken;
use time::OffsetDateTime;

use crate::args::{
    Format, InfoArgs, InitArgs, JoinArgs, JoinTokenArgs, LeaveArgs, TokenAction, TokenCreateArgs,
    TokenLsArgs, TokenRevokeArgs, UpdateArgs,
};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, safe, write_json};
use crate::render::{self, JOIN_TOKEN_ENV};
use crate::token::read_token;

pub(crate) fn init(args: &InitArgs) -> Result<(), Failure> {
    let request = InitRequest {
        listen_addr: match (&args.listen_addr, args.force_new_cluster) {
            (Some(a), _) => a.clone(),
            // Empty: the node keeps its own.
            (None, true) => String::new(),
            (None, false) => crate::args::DEFAULT_LISTEN_ADDR.into(),
        },
        advertise_addr: args.advertise_addr.clone(),
        cert_expiry_seconds: args.cert_expiry.map(|d| d.as_secs()),
        autolock: args.autolock,
        force_new_cluster: args.force_new_cluster,
    };
    let answer: InitResponse = block_on(async {
        client(&args.host)
            .post(path::INIT, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    render::init(&mut out, &answer)?;
    out.flush()?;
    Ok(())
}

pub(crate) fn join(args: &JoinArgs) -> Result<(), Failure> {
    // A bad token fails here, before anything is contacted.
    let token = join_token_input(args.token.as_deref())?;
    let request = JoinRequest {
        token: SecretString::new(token.expose_secret().to_string()),
        remote_addr: args.remote_addr.clone(),
        listen_addr: args.listen_addr.clone(),
        advertise_addr: args.advertise_addr.clone(),
        rejoin: args.rejoin,
    };
    let answer = block_on(async {
        client(&args.host)
            .post::<_, JoinResponse>(path::JOIN, &request)
            .await
            .or_fail()
    });
    drop(request);
    let answer = answer?;
    if let Some(w) = &answer.warning {
        crate::output::warn(w);
    }
    let mut out = io::stdout().lock();
    render::join(&mut out, &answer)?;
    out.flush()?;
    Ok(())
}

/// `moat join`'s token: `--token -` reads standard input; `--token TOKEN`
/// works with a warning (any local user sees a process's arguments);
/// without `--token`, the environment variable `MOAT_JOIN_TOKEN`, which
/// only the process's own user can read.
fn join_token_input(arg: Option<&str>) -> Result<JoinToken, Failure> {
    match arg {
        Some(text) => {
            if text != "-" {
                crate::output::warn(&format!(
                    "the join token is on the command line, where every user of this machine \
                     can read it (ps, /proc/PID/cmdline); pass it in {JOIN_TOKEN_ENV} or with \
                     --token - on standard input"
                ));
            }
            read_token(text)
        }
        None => match std::env::var(JOIN_TOKEN_ENV) {
            Ok(text) => {
                let text = zeroize::Zeroizing::new(text);
                read_token(text.trim()).map_err(|f| f.context(JOIN_TOKEN_ENV))
            }
            Err(std::env::VarError::NotPresent) => Err(Failure::new(
                anyhow::anyhow!(
                    "no join token: set {JOIN_TOKEN_ENV}, or give --token - and the token on standard input"
                ),
                "on a manager, `moat join-token worker` (or `manager`) prints the command to run here",
            )
            // A missing argument, as clap would have said when --token
            // was required.
            .with_code(2)),
            Err(std::env::VarError::NotUnicode(_)) => Err(Failure::new(
                anyhow::anyhow!("{JOIN_TOKEN_ENV} is not text"),
                "set it to the token that `moat join-token worker` (or `manager`) prints on a manager",
            )),
        },
    }
}

pub(crate) fn join_token(args: &JoinTokenArgs) -> Result<(), Failure> {
    match &args.action {
        Some(TokenAction::Create(a)) => return token_create(a),
        Some(TokenAction::Ls(a)) => return token_ls(a),
        Some(TokenAction::Revoke(a)) => return token_revoke(a),
        None => {}
    }
    let role = args.role.ok_or_else(|| {
        Failure::new(
            anyhow::anyhow!(
                "say which token: `moat join-token worker` or `moat join-token manager`"
            ),
            "or manage scoped tokens with `moat join-token create|ls|revoke`",
        )
    })?;
    let request = JoinTokenRequest {
        role: role.into(),
        rotate: args.rotate,
    };
    let answer: JoinTokenResponse = block_on(async {
        client(&args.host)
            .post(path::JOIN_TOKEN, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => {
            let command = render::join_command_text(answer.token.expose_secret(), &answer.addr);
            write_json(
                &mut out,
                &JoinTokenJson {
                    answer: &answer,
                    command: &command,
                },
            )?;
        }
        Format::Table => render::join_token(&mut out, &answer, args.quiet)?,
    }
    out.flush()?;
    Ok(())
}

/// `moat join-token ROLE --format json`: what the text shows (role, token,
/// address, whether it was rotated) and the join command. No `Debug`: it
/// holds the token.
#[derive(serde::Serialize)]
struct JoinTokenJson<'a> {
    #[serde(flatten)]
    answer: &'a JoinTokenResponse,
    command: &'a str,
}

fn token_create(args: &TokenCreateArgs) -> Result<(), Failure> {
    let request = CreateTokenRequest {
        role: args.role.into(),
        ttl_seconds: args.ttl.map(|d| d.as_secs()),
        uses: args.uses,
        labels: args.labels.iter().cloned().collect(),
        description: args.description.clone(),
    };
    let answer: CreateTokenResponse = block_on(async {
        client(&args.host)
            .post(path::JOIN_TOKEN_CREATE, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    if args.quiet {
        writeln!(out, "{}", answer.token.expose_secret())?;
    } else {
        writeln!(out, "Created join token {}.", safe(&answer.id))?;
        let mut limits = Vec::new();
        if let Some(at) = &answer.expires_at {
            limits.push(format!("expires at {}", safe(at)));
        }
        if let Some(uses) = answer.uses {
            limits.push(format!("{uses} use(s)"));
        }
        if !limits.is_empty() {
            writeln!(out, "It {}.", limits.join(", "))?;
        }
        writeln!(out)?;
        writeln!(out, "To join with it, run the following command:")?;
        writeln!(out)?;
        render::join_command(&mut out, answer.token.expose_secret(), &answer.addr)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

fn token_ls(args: &TokenLsArgs) -> Result<(), Failure> {
    let tokens: Vec<TokenSummary> =
        block_on(async { client(&args.host).get(path::JOIN_TOKENS).await.or_fail() })?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &tokens)?,
        Format::Table => render::token_ls(&mut out, &tokens)?,
    }
    out.flush()?;
    Ok(())
}

fn token_revoke(args: &TokenRevokeArgs) -> Result<(), Failure> {
    let revoked: TokenRef = block_on(async {
        client(&args.host)
            .post(
                path::JOIN_TOKEN_REVOKE,
                &TokenRef {
                    id: args.id.clone(),
                },
            )
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", safe(&revoked.id))?;
    out.flush()?;
    Ok(())
}

pub(crate) fn leave(args: &LeaveArgs) -> Result<(), Failure> {
    let request = LeaveRequest { force: args.force };
    let _: Empty = block_on(async {
        client(&args.host)
            .post(path::LEAVE, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "Node left the cluster.")?;
    out.flush()?;
    Ok(())
}

pub(crate) fn update(args: &UpdateArgs) -> Result<(), Failure> {
    let request = UpdateRequest {
        cert_expiry_seconds: args.cert_expiry.map(|d| d.as_secs()),
        token_ttl_seconds: args.token_ttl.map(|d| d.as_secs()),
        autolock: args.autolock,
    };
    let answer: UpdateResponse = block_on(async {
        client(&args.host)
            .post(path::UPDATE, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "Cluster updated.")?;
    if let Some(key) = &answer.unlock_key {
        writeln!(out)?;
        render::unlock_key(&mut out, key.expose_secret())?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn info(args: &InfoArgs) -> Result<(), Failure> {
    let info: Info = block_on(async { client(&args.host).get(path::INFO).await.or_fail() })?;
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &info)?,
        Format::Table => render::info(&mut out, &info, OffsetDateTime::now_utc())?,
    }
    out.flush()?;
    Ok(())
}
