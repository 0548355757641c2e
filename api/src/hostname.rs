//! Host names, as a node reports its own: the one check every place that
//! lets a name into the cluster makes (`moat daemon --hostname`, the
//! machine's name at start, a manager admitting a join).
//!
//! A host name travels far: into the replicated store, every member's
//! `moat node ls`, the audit log, metrics labels. So it is held to RFC 1123
//! (as amended for host names by RFC 1035 §2.3.1): dot-separated labels of
//! ASCII letters, digits and hyphens, each 1 to 63 characters and neither
//! starting nor ending with a hyphen, 253 characters in all. Nothing else
//! gets in: no control character (a terminal escape), no space, no
//! non-ASCII look-alike.

use std::fmt;

/// The longest host name accepted, in characters (RFC 1035's 255 octets
/// on the wire, less the length octets).
pub const MAX_HOSTNAME_LEN: usize = 253;

/// The longest label (the text between dots), in characters.
pub const MAX_HOSTNAME_LABEL_LEN: usize = 63;

/// Checks that `name` is a valid host name (see the module doc).
///
/// The error never holds `name` raw: characters it quotes are escaped, so
/// it is safe to print on a terminal.
pub fn validate_hostname(name: &str) -> Result<(), InvalidHostname> {
    if name.is_empty() {
        return Err(InvalidHostname::Empty);
    }
    let len = name.chars().count();
    if len > MAX_HOSTNAME_LEN {
        return Err(InvalidHostname::TooLong { len });
    }
    for (at, c) in name.chars().enumerate() {
        if !(c.is_ascii_alphanumeric() || c == '-' || c == '.') {
            return Err(InvalidHostname::Character { at, c });
        }
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(InvalidHostname::EmptyLabel);
        }
        if label.len() > MAX_HOSTNAME_LABEL_LEN {
            return Err(InvalidHostname::LabelTooLong { len: label.len() });
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(InvalidHostname::Hyphen {
                label: label.to_owned(),
            });
        }
    }
    Ok(())
}

/// Why a host name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHostname {
    /// The name is empty.
    #[error("the host name is empty")]
    Empty,
    /// The name is longer than [`MAX_HOSTNAME_LEN`].
    #[error("the host name is {len} characters long; at most {MAX_HOSTNAME_LEN} are allowed")]
    TooLong {
        /// Its length, in characters.
        len: usize,
    },
    /// A character other than an ASCII letter, digit, hyphen or dot.
    #[error(
        "the host name has {} at character {}: only ASCII letters, digits, hyphens and dots are allowed",
        Shown(*c),
        at + 1
    )]
    Character {
        /// Where, counting characters from 0.
        at: usize,
        /// The character.
        c: char,
    },
    /// Two dots in a row, or a dot at the start or end.
    #[error("the host name has an empty label (two dots in a row, or a dot at the start or end)")]
    EmptyLabel,
    /// A label longer than [`MAX_HOSTNAME_LABEL_LEN`].
    #[error(
        "a label of the host name is {len} characters long; at most {MAX_HOSTNAME_LABEL_LEN} are allowed between dots"
    )]
    LabelTooLong {
        /// Its length, in characters.
        len: usize,
    },
    /// A label that starts or ends with a hyphen (only letters, digits
    /// and hyphens, so safe to print).
    #[error("the host name's label {label:?} starts or ends with a hyphen")]
    Hyphen {
        /// The label.
        label: String,
    },
}

/// A refused character, shown so that it cannot act on a terminal: a
/// control or format character as its code point (`U+001B`), any other
/// quoted (`'_'`).
struct Shown(char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        if c.is_ascii_graphic() || c == ' ' {
            write!(f, "{c:?}")
        } else {
            write!(f, "U+{:04X}", u32::from(c))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "worker-1",
            "m",
            "3com",
            "Node-7.example.COM",
            "a.b.c",
            &"a".repeat(63),
            &[
                "a".repeat(63),
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(61),
            ]
            .join("."),
        ] {
            assert_eq!(validate_hostname(name), Ok(()), "{name:?}");
        }
    }

    /// Guards issue 16, finding 5: a host name holding an OSC sequence
    /// (which sets a terminal's title, or worse) no longer enters the
    /// cluster, and the refusal does not print it raw.
    #[test]
    fn escapes_and_control_characters_are_refused_and_not_echoed() {
        for name in [
            "\u{1b}]0;pwned\u{7}",
            "evil\u{1b}[2Jhost",
            "a\nb",
            "a\rb",
            "tab\there",
            "del\u{7f}",
            "c1\u{9b}31m",
            "rtl\u{202e}gnp.exe",
            "zero\u{200b}width",
            "nul\0",
        ] {
            let e = validate_hostname(name).unwrap_err();
            assert!(matches!(e, InvalidHostname::Character { .. }), "{name:?}");
            let text = e.to_string();
            assert!(
                !text.chars().any(|c| c.is_control() || !c.is_ascii()),
                "{text:?}"
            );
        }
        let e = validate_hostname("\u{1b}]0;pwned\u{7}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the host name has U+001B at character 1: only ASCII letters, digits, hyphens and dots are allowed"
        );
        let e = validate_hostname("my_host").unwrap_err();
        assert!(e.to_string().contains("'_' at character 3"), "{e}");
        for name in ["a b", "ünïcode", "a/b", "a:b", "caf\u{e9}"] {
            assert!(validate_hostname(name).is_err(), "{name:?}");
        }
    }

    #[test]
    fn lengths_and_labels_are_bounded() {
        assert_eq!(validate_hostname(""), Err(InvalidHostname::Empty));
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(long.len(), 254);
        assert_eq!(
            validate_hostname(&long),
            Err(InvalidHostname::TooLong { len: 254 })
        );
        assert_eq!(
            validate_hostname(&"a".repeat(64)),
            Err(InvalidHostname::LabelTooLong { len: 64 })
        );
        for name in ["a..b", ".a", "a.", "."] {
            assert_eq!(
                validate_hostname(name),
                Err(InvalidHostname::EmptyLabel),
                "{name:?}"
            );
        }
        for name in ["-a", "a-", "ok.-b", "ok.b-"] {
            assert!(
                matches!(validate_hostname(name), Err(InvalidHostname::Hyphen { .. })),
                "{name:?}"
            );
        }
    }
}
