//! Printing reports and failures.
//!
//! Text that the cluster's members, a file or a daemon can influence (host
//! names, labels, token descriptions, audit details, the daemon's error
//! messages) goes through [`safe`] before it reaches a terminal: a control
//! character is shown escaped (`\u{1b}`), never sent, so it cannot move
//! the cursor, retitle the window or forge a line. Tables and `Key: value`
//! lines escape every cell themselves; JSON is escaped by serde_json.

use std::borrow::Cow;
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

    /// The same failure, with `what` before its message (`what: …`).
    pub(crate) fn context(mut self, what: &'static str) -> Self {
        self.error = self.error.map(|e| e.context(what));
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
        // The daemon's words may quote what a cluster member sent (a host
        // name, a label): escaped whole, new lines included.
        let hint = e.hint().map(|h| safe(&h).into_owned());
        // The message already names its cause (`…: No such file or
        // directory`), so it travels as text, not as a chain.
        Self::with_hint(anyhow::Error::msg(safe(&e.to_string()).into_owned()), hint)
    }

    /// Prints `moat: <error>: <cause>: …` and the hint to stderr; returns
    /// whether anything was printed (a broken pipe is not).
    pub(crate) fn print(&self) -> bool {
        match &self.error {
            Some(error) if is_broken_pipe(error) => false,
            _ => {
                let _ = self.write_to(&mut io::stderr().lock());
                true
            }
        }
    }

    /// Writes `moat: <error>: <cause>: …` and `hint: <hint>` lines, with
    /// control characters escaped (new lines and tabs excepted: a parser's
    /// multi-line message stays readable).
    fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let Some(error) = &self.error else {
            return Ok(());
        };
        writeln!(out, "moat: {}", safe_lines(&chain_text(error)))?;
        if let Some(hint) = &self.hint {
            writeln!(out, "hint: {}", safe_lines(hint))?;
        }
        Ok(())
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

/// Prints `warning: <message>` on standard error, escaped (a daemon's
/// warning may quote a member's words).
pub(crate) fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "warning: {}", safe(message));
}

/// Prints a progress line on standard error (standard output carries only
/// the result), escaped.
pub(crate) fn progress(message: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{}", safe(&message.to_string()));
}

/// `s` safe to print on a terminal: every control character (C0, DEL,
/// C1: escape sequences, bells, carriage returns, new lines) and every
/// invisible direction or width override (`U+202E`, `U+200B`, …) shown
/// escaped as Rust writes it (`\n`, `\u{1b}`), anything else as it is.
/// Borrowed, without copying, when there is nothing to escape.
pub(crate) fn safe(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// Like [`safe`], but keeps new lines and tabs: for messages this program
/// composes from several lines.
pub(crate) fn safe_lines(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, keep_lines: bool) -> Cow<'_, str> {
    let hidden = |c: char| {
        (c.is_control() && !(keep_lines && (c == '\n' || c == '\t')))
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
    };
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `what happened: cause: cause …`, as anyhow's `{:#}` writes it, less
/// every cause that the message before it already quotes. Many errors in
/// the workspace name their cause in their own message (so that a log
/// line or a daemon's answer, which show one message, say why) and also
/// return it as their `source()`: printed whole, the chain said it twice
/// (`…/heads.json: No such file or directory (os error 2): No such file
/// or directory (os error 2)`).
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous: Option<String> = None;
    for cause in error.chain() {
        let message = cause.to_string();
        match &previous {
            None => text.push_str(&message),
            Some(before) if !message.is_empty() && before.contains(&message) => {}
            Some(_) => {
                text.push_str(": ");
                text.push_str(&message);
            }
        }
        previous = Some(message);
    }
    text
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
        writeln!(
            out,
            "{:<width$} {}",
            format!("{key}:"),
            safe(value),
            width = width
        )?;
    }
    Ok(())
}

/// Writes a table: a header line, then one line per row, columns as wide
/// as their widest cell and three spaces apart (Docker's layout). The last
/// column is not padded, so no line ends in spaces. Cells are escaped
/// ([`safe`]): a cell is always one line, whatever it holds.
pub(crate) fn write_table<R: AsRef<[String]>>(
    out: &mut impl Write,
    headers: &[&str],
    rows: &[R],
) -> io::Result<()> {
    const GAP: usize = 3;
    let rows: Vec<Vec<Cow<'_, str>>> = rows
        .iter()
        .map(|r| r.as_ref().iter().map(|c| safe(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
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
    for row in &rows {
        line(&mut row.iter().map(|c| &**c))?;
    }
    Ok(())
}

/// Standard output for a whole answer, buffered: stdout is line-buffered,
/// so `node ls --format json` of 10,000 nodes made about 200,000 writes
/// (one per line of pretty JSON) and spent most of its time in them.
/// Callers flush at the end (a dropped `BufWriter` loses a write error).
pub(crate) fn stdout() -> io::BufWriter<io::StdoutLock<'static>> {
    io::BufWriter::with_capacity(64 * 1024, io::stdout().lock())
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

    /// Guards issue 16, finding 5: a daemon's error that quotes what a
    /// member sent (a host name with an OSC sequence, a forged `hint:`
    /// line) is printed escaped, message and hint alike.
    #[test]
    fn a_daemons_error_quoting_hostile_text_is_printed_escaped() {
        let e = moat_api::ApiError::new(
            moat_api::ErrorKind::NotFound,
            "no node \u{1b}]0;pwned\u{7}\nhint: run rm -rf ~",
        )
        .hint("check \u{9b}31m`moat node ls`\r");
        let mut out = Vec::new();
        Failure::api(moat_api::ClientError::Api(e))
            .write_to(&mut out)
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "moat: no node \\u{1b}]0;pwned\\u{7}\\nhint: run rm -rf ~\n\
             hint: check \\u{9b}31m`moat node ls`\\r\n"
        );
    }

    /// A local error keeps its line breaks (a parser's caret display) but
    /// not an escape sequence from a file it quotes.
    #[test]
    fn a_local_error_keeps_its_lines_but_not_escapes() {
        let f = Failure::new(
            anyhow::anyhow!("policy.toml line 1\n  | fail_on = \"\u{1b}[2J\"\n  |    ^"),
            "fix\tit",
        );
        let mut out = Vec::new();
        f.write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "moat: policy.toml line 1\n  | fail_on = \"\\u{1b}[2J\"\n  |    ^\nhint: fix\tit\n"
        );
    }

    /// Guards issue 20, finding 8: an error whose message quotes its
    /// source, and returns it as `source()` too, names the cause once.
    #[test]
    fn a_cause_already_quoted_is_printed_once() {
        /// As thiserror's `#[error("{path}: {source}")]` with a `source`.
        #[derive(Debug)]
        struct Quoting {
            path: &'static str,
            source: io::Error,
        }
        impl std::fmt::Display for Quoting {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}: {}", self.path, self.source)
            }
        }
        impl std::error::Error for Quoting {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.source)
            }
        }
        let inner = Quoting {
            path: "audit/heads.json",
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let f = Failure::new(
            anyhow::Error::new(inner).context("cannot read the audit bundle audit/"),
            "hint",
        );
        let mut out = Vec::new();
        f.write_to(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "moat: cannot read the audit bundle audit/: audit/heads.json: entity not found\n\
             hint: hint\n"
        );
        // A cause not quoted is still printed, after every level.
        let chained = anyhow::Error::new(io::Error::from(io::ErrorKind::NotFound))
            .context("opening x")
            .context("restoring");
        assert_eq!(
            chain_text(&chained),
            "restoring: opening x: entity not found"
        );
    }

    #[test]
    fn safe_escapes_controls_and_invisible_overrides_only() {
        assert!(matches!(safe("worker-1 ünï 名前"), Cow::Borrowed(_)));
        assert_eq!(safe("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(
            safe("bell\u{7} del\u{7f} c1\u{85}"),
            "bell\\u{7} del\\u{7f} c1\\u{85}"
        );
        assert_eq!(safe("line\nbreak\ttab\rcr"), "line\\nbreak\\ttab\\rcr");
        assert_eq!(safe("abc\u{202e}gpj.exe"), "abc\\u{202e}gpj.exe");
        assert_eq!(
            safe("zero\u{200b}width\u{feff}"),
            "zero\\u{200b}width\\u{feff}"
        );
        assert_eq!(safe_lines("a\nb\tc\u{1b}"), "a\nb\tc\\u{1b}");
    }

    /// Every table cell is one line on the screen, escaped.
    #[test]
    fn table_cells_are_escaped_and_keep_their_width() {
        let mut out = Vec::new();
        let rows = [
            vec!["\u{1b}]0;x\u{7}".to_string(), "b".to_string()],
            vec!["two\nlines".to_string(), "c".to_string()],
        ];
        write_table(&mut out, &["A", "B"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A                 B\n\
             \\u{1b}]0;x\\u{7}   b\n\
             two\\nlines        c\n"
        );
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
