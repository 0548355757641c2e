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
        let mut text = String::new();
        io::stdin()
            .lock()
            .take(4096)
            .read_to_string(&mut text)
            .map_err(|e| Failure::new(e, "pipe the token on standard input as text"))?;
        let token = text.trim().parse();
        zeroize_string(&mut text);
        token
    } else {
        arg.parse()
    }
    .map_err(|e| {
        Failure::new(
            anyhow::Error::new(e).context("invalid join token"),
            "a moat join token looks like MOATTKN-1-<52 chars>-<26 chars>-<8 chars>; \
             a manager prints the current one with 'moat join-token worker' (or 'manager')",
        )
    })
}

/// Overwrites a string that held a secret before it is freed.
pub(crate) fn zeroize_string(s: &mut String) {
    // SAFETY-free: replace every byte through the safe API.
    let len = s.len();
    s.clear();
    s.extend(std::iter::repeat_n('\0', len));
    s.clear();
}
