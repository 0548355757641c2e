//! Printing reports and failures.

use std::fmt::Display;
use std::io::{self, Write};
use std::process::ExitCode;

/// A failed command: what happened (with causes) and what to do next.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `None` once the failure was printed ([`Failure::reported`]).
    error: Option<anyhow::Error>,
    hint: Option<String>,
    /// The exit code (1 unless a command documents another).
    code: u8,
}

impl Failure {
    /// A failure saying `error`, with `hint` as the next step.
    pub(crate) fn new(error: impl Into<anyhow::Error>, hint: impl Display) -> Self {
        Self::with_hint(error, Some(hint.to_string()))
    }

    /// A failure saying `error`, with a hint when there is one.
    pub(crate) fn with_hint(error: impl Into<anyhow::Error>, hint: Option<String>) -> Self {
        Self {
            error: Some(error.into()),
            hint,
            code: 1,
        }
    }

    /// The same failure, exiting with `code` instead of 1.
    pub(crate) fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// A failure whose messages were already printed (by [`Failure::print`]):
    /// it only makes the command exit 1.
    pub(crate) fn reported() -> Self {
        Self {
            error: None,
            hint: None,
            code: 1,
        }
    }

    /// A failed control API request. The daemon's message is printed as it
    /// is, with its hint; a connection failure says how to reach a daemon.
    pub(crate) fn api(e: moat_api::ClientError) -> Self {
        let hint = e.hint();
        // The message already names its cause (`…: No such file or
        // directory`), so it travels as text, not as a chain.
        Self::with_hint(anyhow::Error::msg(e.to_string()), hint)
    }

    /// Prints `moat: <error>: <cause>: …` and the hint to stderr; returns
    /// whether anything was printed (a broken pipe is not).
    pub(crate) fn print(&self) -> bool {
        let Some(error) = &self.error else {
            return true;
        };
        if is_broken_pipe(error) {
            return false;
        }
        let mut stderr = io::stderr().lock();
        let _ = writeln!(stderr, "moat: {error:#}");
        if let Some(hint) = &self.hint {
            let _ = writeln!(stderr, "hint: {hint}");
        }
        true
    }

    /// Prints the failure (see [`Failure::print`]) and gives the exit code:
    /// 1, or 0 for a closed pipe on standard output.
    pub(crate) fn report(&self) -> ExitCode {
        if self.print() {
            ExitCode::from(self.code)
        } else {
            ExitCode::SUCCESS
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Self {
            error: Some(e.into()),
            hint: None,
            code: 1,
        }
    }
}

/// Prints `warning: <message>` on standard error.
pub(crate) fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "warning: {message}");
}

/// Prints a progress line on standard error (standard output carries only
/// the result).
pub(crate) fn progress(message: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{message}");
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

/// Writes a table: a header line, then one line per row, columns as wide
/// as their widest cell and three spaces apart (Docker's layout). The last
/// column is not padded, so no line ends in spaces.
pub(crate) fn write_table<R: AsRef<[String]>>(
    out: &mut impl Write,
    headers: &[&str],
    rows: &[R],
) -> io::Result<()> {
    const GAP: usize = 3;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(width) => *width = (*width).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> io::Result<()> {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            text.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count()) + GAP;
            text.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut headers.iter().copied())?;
    for row in rows {
        line(&mut row.as_ref().iter().map(String::as_str))?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON and a newline.
pub(crate) fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> io::Result<()> {
    // `From` keeps an I/O error as it is, so a closed pipe stays one.
    serde_json::to_writer_pretty(&mut *out, value).map_err(io::Error::from)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;

    /// A reader that closed the pipe.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Guards: `moat … --format json | head` ends quietly; serde_json's
    /// error used to hide the broken pipe inside an `Other` error.
    #[test]
    fn json_to_a_closed_pipe_is_a_broken_pipe() {
        let e = write_json(&mut ClosedPipe, &vec![1, 2, 3]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(!Failure::from(e).print());
    }

    #[test]
    fn table_columns_fit_their_widest_cell_and_lines_end_clean() {
        let mut out = Vec::new();
        let rows = [
            vec!["a".to_string(), "".to_string(), "x".to_string()],
            vec!["long cell".to_string(), "b".to_string(), "".to_string()],
        ];
        write_table(&mut out, &["ONE", "TWO", "THREE"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ONE         TWO   THREE\n\
             a                 x\n\
             long cell   b\n"
        );
    }
}
