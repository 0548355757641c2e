//! Printing reports and failures.

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

/// A failed command: what happened (with causes) and what to do next.
#[derive(Debug)]
pub(crate) struct Failure {
    error: anyhow::Error,
    hint: Option<String>,
}

impl Failure {
    pub(crate) fn new(error: impl Into<anyhow::Error>, hint: impl Display) -> Self {
        Self {
            error: error.into(),
            hint: Some(hint.to_string()),
        }
    }

    /// Prints `moat: <error>: <cause>: …` and the hint to stderr.
    pub(crate) fn report(&self) -> ExitCode {
        if is_broken_pipe(&self.error) {
            return ExitCode::SUCCESS;
        }
        let mut stderr = io::stderr().lock();
        let _ = writeln!(stderr, "moat: {:#}", self.error);
        if let Some(hint) = &self.hint {
            let _ = writeln!(stderr, "hint: {hint}");
        }
        ExitCode::FAILURE
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self {
            error: e.into(),
            hint: None,
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// Writes `Key: value` lines with the values aligned.
pub(crate) fn write_fields(out: &mut impl Write, fields: &[(&str, String)]) -> io::Result<()> {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        writeln!(out, "{:<width$} {value}", format!("{key}:"), width = width)?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON and a newline.
pub(crate) fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Reads a whole input named on the command line (`-` is stdin), refusing
/// anything larger than `limit` bytes before reading it all.
pub(crate) fn read_input(path: &std::path::Path, limit: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        io::stdin().lock().take(limit + 1).read_to_end(&mut buf)?;
    } else {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() > limit {
            return Err(too_large(limit));
        }
        file.take(limit + 1).read_to_end(&mut buf)?;
    }
    if buf.len() as u64 > limit {
        return Err(too_large(limit));
    }
    Ok(buf)
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("input is larger than {limit} bytes"),
    )
}
