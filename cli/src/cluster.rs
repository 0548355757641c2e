//! `moat init`, `join`, `join-token`, `leave`, `update` and `info`: the
//! cluster as a whole, through the local daemon's control API.

use std::io::{self, Write};

use moat_api::{
    Empty, Info, InitRequest, InitResponse, JoinRequest, JoinResponse, JoinTokenRequest,
    JoinTokenResponse, LeaveRequest, UpdateRequest, path,
};
use time::OffsetDateTime;

use crate::args::{Format, InfoArgs, InitArgs, JoinArgs, JoinTokenArgs, LeaveArgs, UpdateArgs};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, write_json};
use crate::render;
use crate::token::{read_token, zeroize_string};

pub(crate) fn init(args: &InitArgs) -> Result<(), Failure> {
    let request = InitRequest {
        listen_addr: args.listen_addr.clone(),
        advertise_addr: args.advertise_addr.clone(),
        cert_expiry_seconds: args.cert_expiry.map(|d| d.as_secs()),
        autolock: args.autolock,
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
    let token = read_token(&args.token)?;
    let mut request = JoinRequest {
        token: token.expose_secret().to_string(),
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
    zeroize_string(&mut request.token);
    let answer = answer?;
    if let Some(w) = &answer.warning {
        crate::output::warn(w);
    }
    let mut out = io::stdout().lock();
    render::join(&mut out, &answer)?;
    out.flush()?;
    Ok(())
}

pub(crate) fn join_token(args: &JoinTokenArgs) -> Result<(), Failure> {
    let request = JoinTokenRequest {
        role: args.role.into(),
        rotate: args.rotate,
    };
    let answer: JoinTokenResponse = block_on(async {
        client(&args.host)
            .post(path::JOIN_TOKEN, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    render::join_token(&mut out, &answer, args.quiet)?;
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
        autolock: args.autolock,
    };
    let _: Info = block_on(async {
        client(&args.host)
            .post(path::UPDATE, &request)
            .await
            .or_fail()
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "Cluster updated.")?;
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
