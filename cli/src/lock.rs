//! `moat unlock` and `moat unlock-key`: autolock, through the local
//! daemon's control API.

use std::io::{self, BufRead, IsTerminal, Write};

use moat_api::{Empty, SecretString, UnlockKeyResponse, UnlockRequest, UnlockResponse, path};
use zeroize::Zeroizing;

use crate::args::{Format, UnlockArgs, UnlockKeyArgs};
use crate::client::{ApiResult as _, block_on, client};
use crate::output::{Failure, write_json};
use crate::render;

/// The longest line read as a key or share.
const MAX_LINE: u64 = 4096;

pub(crate) fn unlock(args: &UnlockArgs) -> Result<(), Failure> {
    let tty = io::stdin().is_terminal();
    let mut stdin = io::stdin().lock();
    let mut prompt = "Enter unlock key (or one share): ";
    let mut progress: Option<String> = None;
    loop {
        let Some(text) = read_secret(tty, &mut stdin, prompt)? else {
            if let Some(progress) = progress {
                // Shares were given and kept: others can add theirs.
                let mut out = io::stdout().lock();
                writeln!(
                    out,
                    "This node is still locked: {progress}. Each holder can add a share with `moat unlock`."
                )?;
                return Ok(());
            }
            return Err(Failure::new(
                anyhow::anyhow!("no unlock key given"),
                "type the key at the prompt, or pipe it on standard input",
            ));
        };
        let request = checked_request(text, progress.as_deref())?;
        let answer: Result<UnlockResponse, Failure> = block_on(async {
            client(&args.host)
                .post(path::UNLOCK, &request)
                .await
                .or_fail()
        });
        // The text is wiped on drop.
        drop(request);
        let answer = answer?;
        if answer.unlocked {
            let mut out = io::stdout().lock();
            writeln!(out, "This node is unlocked.")?;
            return Ok(());
        }
        if let Some(note) = &answer.note {
            crate::output::warn(note);
        }
        let now = format!(
            "need {} of {} shares, have {}",
            answer.shares_need, answer.shares_total, answer.shares_have
        );
        // More shares may follow on standard input or at the prompt; when
        // there are none, the node stays locked with the shares it has
        // (others can add theirs with `moat unlock`).
        crate::output::progress(format_args!("Share accepted: {now}."));
        prompt = "Enter the next share (empty to stop): ";
        progress = Some(now);
    }
}

/// The request for `text`, once it parses as an unlock key or a share
/// (`MOATSHARE-…`), as the daemon parses it. So a mistyped one (prefix,
/// version, length, character, checksum) is refused here, with the
/// codec's message, and never reaches the daemon, where it would count as
/// a failed attempt. The daemon takes nothing else in these fields (no
/// passphrase). The request carries the text, as it always has (moved,
/// not copied); the parsed value is dropped (zeroized) at once.
fn checked_request(
    text: Zeroizing<String>,
    progress: Option<&str>,
) -> Result<UnlockRequest, Failure> {
    let kept = progress
        .map(|p| format!("; the node keeps the shares given so far ({p})"))
        .unwrap_or_default();
    if text.starts_with("MOATSHARE") {
        text.parse::<moat_lock::UnlockShare>().map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context("invalid share"),
                format!("copy the share exactly as `moat unlock-key --split` printed it{kept}"),
            )
        })?;
        Ok(UnlockRequest {
            key: None,
            share: Some(SecretString::from(text)),
        })
    } else {
        text.parse::<moat_lock::UnlockKey>().map_err(|e| {
            Failure::new(
                anyhow::Error::new(e).context("invalid unlock key"),
                format!(
                    "copy the whole MOATKEY-1-… line (or one MOATSHARE-1-… share) as it was printed{kept}"
                ),
            )
        })?;
        Ok(UnlockRequest {
            key: Some(SecretString::from(text)),
            share: None,
        })
    }
}

/// Reads one key or share: from a hidden prompt on a terminal, else the
/// next non-empty line of standard input. `None` at the end of input or
/// for an empty answer at the prompt.
fn read_secret<R: BufRead>(
    tty: bool,
    stdin: &mut R,
    prompt: &str,
) -> Result<Option<Zeroizing<String>>, Failure> {
    if tty {
        let text = Zeroizing::new(rpassword::prompt_password(prompt).map_err(|e| {
            Failure::new(
                e,
                "run `moat unlock` in a terminal, or pipe the key on standard input",
            )
        })?);
        let trimmed = text.trim();
        return Ok((!trimmed.is_empty()).then(|| Zeroizing::new(trimmed.to_string())));
    }
    loop {
        let mut line = Zeroizing::new(String::new());
        let read = io::Read::take(&mut *stdin, MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| Failure::new(e, "pipe the unlock key on standard input as text"))?;
        if read == 0 {
            return Ok(None);
        }
        let trimmed = line.trim();
        if !trimmed.is_empty() {
            return Ok(Some(Zeroizing::new(trimmed.to_string())));
        }
    }
}

pub(crate) fn unlock_key(args: &UnlockKeyArgs) -> Result<(), Failure> {
    let answer: UnlockKeyResponse = block_on(async {
        let client = client(&args.host);
        if args.rotate {
            client.post(path::UNLOCK_KEY_ROTATE, &Empty {}).await
        } else {
            client.get(path::UNLOCK_KEY).await
        }
        .or_fail()
    })?;
    let key = answer.key.into_zeroizing();
    let mut out = io::stdout().lock();
    let json = UnlockKeyJson {
        key: None,
        threshold: None,
        shares: None,
        rotated: args.rotate,
        generation: answer.generation,
        set_at: &answer.set_at,
    };
    match args.split {
        None if args.format == Format::Json => write_json(
            &mut out,
            &UnlockKeyJson {
                key: Some(&key),
                ..json
            },
        )?,
        None if args.quiet => writeln!(out, "{}", key.as_str())?,
        None => {
            if args.rotate {
                writeln!(out, "Successfully rotated manager unlock key.")?;
                writeln!(out)?;
            }
            render::unlock_key(&mut out, &key)?;
        }
        Some((k, n)) => {
            let parsed: moat_lock::UnlockKey = key.parse().map_err(|e| {
                Failure::new(
                    anyhow::Error::new(e).context("the daemon sent a malformed unlock key"),
                    "this is a bug; report it",
                )
            })?;
            let shares = moat_lock::split_unlock_key(&parsed, k, n).map_err(|e| {
                Failure::new(e, "choose K and N with 2 <= K <= N <= 16, e.g. --split 3/5")
            })?;
            let texts: Vec<Zeroizing<String>> =
                shares.iter().map(|s| s.expose_for_operator()).collect();
            if args.format == Format::Json {
                write_json(
                    &mut out,
                    &UnlockKeyJson {
                        threshold: Some(k),
                        shares: Some(texts.iter().map(|t| t.as_str()).collect()),
                        ..json
                    },
                )?;
            } else if args.quiet {
                for t in &texts {
                    writeln!(out, "{}", t.as_str())?;
                }
            } else {
                if args.rotate {
                    writeln!(out, "Successfully rotated manager unlock key.")?;
                    writeln!(out)?;
                }
                render::unlock_shares(&mut out, k, &texts)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `moat unlock-key --format json`: the key (or, with --split, the
/// threshold and the shares, never the key) and what the daemon says of
/// it. No `Debug`: it holds the secret.
#[derive(serde::Serialize)]
struct UnlockKeyJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shares: Option<Vec<&'a str>>,
    /// Whether this command rotated it.
    rotated: bool,
    /// The autolock setting's generation.
    generation: u32,
    /// When it was set (RFC 3339).
    set_at: &'a str,
}
