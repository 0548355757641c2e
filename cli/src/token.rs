//! `moat token …`

use std::io::{self, Read, Write};

use moat_tokens::JoinToken;

use crate::args::{Format, TokenInspect};
use crate::output::{Failure, write_fields, write_json};

pub(crate) fn inspect(args: &TokenInspect) -> Result<(), Failure> {
    let token = read_token(&args.token)?;
    let info = token.info();
    let mut out = io::stdout().lock();
    match args.format {
        Format::Json => write_json(&mut out, &info)?,
        Format::Table => write_fields(
            &mut out,
            &[
                (
                    "Format",
                    format!("{} version {}", moat_tokens::TOKEN_PREFIX, info.version),
                ),
                ("Root CA digest", info.ca_digest.to_string()),
                ("Fingerprint", info.fingerprint.to_string()),
                (
                    "Checksum",
                    if info.checksum_valid {
                        "valid"
                    } else {
                        "INVALID"
                    }
                    .into(),
                ),
            ],
        )?,
    }
    out.flush()?;
    Ok(())
}

/// Parses a join token given on the command line, or read from standard
/// input when `arg` is `-`. Fails with the token error and a hint, never
/// echoing the text.
pub(crate) fn read_token(arg: &str) -> Result<JoinToken, Failure> {
    if arg == "-" {
        // Wiped when dropped, whatever the parse says.
        let mut text = zeroize::Zeroizing::new(String::new());
        io::stdin()
            .lock()
            .take(4096)
            .read_to_string(&mut text)
            .map_err(|e| Failure::new(e, "pipe the token on standard input as text"))?;
        text.trim().parse()
    } else {
        arg.parse()
    }
    .map_err(|e| {
        Failure::new(
            anyhow::Error::new(e).context("invalid join token"),
            "a moat join token looks like MOATTKN-1-<52 chars>-<26 chars>-<8 chars>; \
             a manager prints the current one with `moat join-token worker` (or `manager`)",
        )
    })
}
