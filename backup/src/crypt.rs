//! The age layer: parsing recipients and identity files, building the
//! encryptor, opening an age stream with the right identity, and mapping
//! age's errors to [`BackupError`].

use std::cell::Cell;
use std::io::{self, Read};
use std::iter;
use std::rc::Rc;

use age::secrecy::SecretString;
use zeroize::Zeroizing;

use crate::error::{BackupError, Damage, Limit, Section};
use crate::{Encryption, MAX_SCRYPT_WORK_FACTOR, Unprotect};

/// An age X25519 identity (secret key), parsed from an identity file.
///
/// Its `Debug` prints no key material; it has no `Display`. The key is wiped
/// when it is dropped.
#[derive(Clone)]
pub struct AgeIdentity(age::x25519::Identity);

impl AgeIdentity {
    /// A new random identity (an age X25519 key pair).
    pub fn generate() -> Self {
        Self(age::x25519::Identity::generate())
    }

    /// The identity file's text: a comment naming the recipient, then the
    /// secret key (`AGE-SECRET-KEY-1…`), as age-keygen writes it.
    pub fn to_file_text(&self) -> zeroize::Zeroizing<String> {
        use age::secrecy::ExposeSecret;
        zeroize::Zeroizing::new(format!(
            "# created by moat backup keygen\n# public key: {}\n{}\n",
            self.recipient(),
            self.0.to_string().expose_secret()
        ))
    }

    /// The matching recipient (public key), `age1…`.
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }
}

impl std::fmt::Debug for AgeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgeIdentity(…)")
    }
}

/// Parses the text of an age identity file: one `AGE-SECRET-KEY-1…` per
/// line, blank lines and lines starting with `#` ignored, surrounding
/// whitespace trimmed. Errors name the line number, never its text.
pub(crate) fn parse_identity_file(text: &str) -> Result<Vec<AgeIdentity>, BackupError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let reason = if line.starts_with("AGE-PLUGIN-") {
            "plugin identities are not supported"
        } else if line.starts_with("age1") {
            "this is a recipient (public key), not an identity"
        } else if line.starts_with("-----BEGIN") {
            "passphrase-protected or SSH identity files are not supported"
        } else {
            match line.parse::<age::x25519::Identity>() {
                Ok(id) => {
                    out.push(AgeIdentity(id));
                    continue;
                }
                Err(reason) => reason,
            }
        };
        return Err(BackupError::InvalidIdentity {
            line: i + 1,
            reason,
        });
    }
    if out.is_empty() {
        return Err(BackupError::NoIdentity);
    }
    Ok(out)
}

/// Parses recipient strings (surrounding whitespace ignored).
pub(crate) fn parse_recipients(
    list: &[String],
) -> Result<Vec<age::x25519::Recipient>, BackupError> {
    if list.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    list.iter()
        .map(|s| {
            let t = s.trim();
            t.parse::<age::x25519::Recipient>()
                .map_err(|reason| invalid_recipient(t, reason))
        })
        .collect()
}

fn invalid_recipient(text: &str, reason: &'static str) -> BackupError {
    if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        return BackupError::InvalidRecipient {
            recipient: "AGE-SECRET-KEY-… (not shown)".to_owned(),
            reason: "this is a secret key, not a recipient; keep it private and pass its public key",
        };
    }
    let mut shown: String = text.chars().take(100).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    BackupError::InvalidRecipient {
        recipient: shown,
        reason,
    }
}

/// Builds the age encryptor for recipients.
pub(crate) fn encryptor_for_recipients(list: &[String]) -> Result<age::Encryptor, BackupError> {
    let recipients = parse_recipients(list)?;
    age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient)).map_err(
        |_| BackupError::Internal {
            what: "age encryption to recipients",
        },
    )
}

/// Builds the age encryptor for a passphrase. `work_factor` `None` is age's
/// default (calibrated to about one second on this machine).
pub(crate) fn encryptor_for_passphrase(
    passphrase: &Zeroizing<String>,
    work_factor: Option<u8>,
) -> Result<age::Encryptor, BackupError> {
    if passphrase.is_empty() {
        return Err(BackupError::EmptyPassphrase);
    }
    let mut recipient = age::scrypt::Recipient::new(secret_string(passphrase));
    if let Some(log_n) = work_factor {
        recipient.set_work_factor(log_n);
    }
    age::Encryptor::with_recipients(iter::once(&recipient as &dyn age::Recipient)).map_err(|_| {
        BackupError::Internal {
            what: "age encryption with a passphrase",
        }
    })
}

fn secret_string(s: &Zeroizing<String>) -> SecretString {
    // `to_owned` on a `str` allocates exactly its length, so the boxing
    // inside `SecretString::from` does not reallocate and leave a copy.
    SecretString::from(s.as_str().to_owned())
}

/// Opens an age stream: reads and checks the header (at most
/// `max_header` bytes), picks the identity kind from `unprotect`, and
/// returns the decrypting reader.
pub(crate) fn open<R: Read>(
    input: R,
    unprotect: &Unprotect,
    max_header: u64,
) -> Result<(age::stream::StreamReader<HeaderBudget<R>>, Encryption), BackupError> {
    // The header, then age's 16-byte nonce.
    let budget = Rc::new(Cell::new(Some(max_header + 16)));
    let start = Rc::new(std::cell::RefCell::new(Vec::new()));
    let reader = HeaderBudget {
        inner: input,
        remaining: Rc::clone(&budget),
        start: Rc::clone(&start),
    };
    let decryptor = age::Decryptor::new(reader).map_err(|e| {
        // age says "unknown format" for any header it cannot parse: if
        // the file is age v1, its header was damaged.
        let v1 = start.borrow().as_slice() == AGE_V1_INTRO;
        match map_header_error(e, max_header) {
            BackupError::UnsupportedAgeFormat if v1 => BackupError::Damaged {
                reason: Damage::AgeHeader,
            },
            other => other,
        }
    })?;
    budget.set(None);

    let scrypt = decryptor.is_scrypt();
    let result = match (unprotect, scrypt) {
        (Unprotect::Passphrase(p), true) => {
            if p.is_empty() {
                return Err(BackupError::EmptyPassphrase);
            }
            let mut identity = age::scrypt::Identity::new(secret_string(p));
            identity.set_max_work_factor(MAX_SCRYPT_WORK_FACTOR);
            decryptor.decrypt(iter::once(&identity as &dyn age::Identity))
        }
        (Unprotect::Identities(files), false) if !files.is_empty() => {
            let mut identities = Vec::new();
            for text in files {
                identities.extend(parse_identity_file(text)?);
            }
            decryptor.decrypt(identities.iter().map(|i| &i.0 as &dyn age::Identity))
        }
        (_, true) => return Err(BackupError::NeedsPassphrase),
        (_, false) => return Err(BackupError::NeedsIdentity),
    };
    let reader = result.map_err(|e| map_key_error(e, scrypt))?;
    let encryption = if scrypt {
        Encryption::Passphrase
    } else {
        Encryption::Recipients
    };
    Ok((reader, encryption))
}

fn map_header_error(e: age::DecryptError, max_header: u64) -> BackupError {
    use age::DecryptError as D;
    match e {
        D::Io(e) if HeaderTooLarge::is(&e) => BackupError::TooLarge {
            what: Limit::AgeHeader,
            found: max_header + 1,
            max: max_header,
        },
        D::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => BackupError::Truncated {
            at: Section::AgeHeader,
        },
        D::Io(e) => BackupError::Read { source: e },
        D::UnknownFormat => BackupError::UnsupportedAgeFormat,
        _ => BackupError::Damaged {
            reason: Damage::AgeHeader,
        },
    }
}

fn map_key_error(e: age::DecryptError, scrypt: bool) -> BackupError {
    use age::DecryptError as D;
    match e {
        D::NoMatchingKeys if !scrypt => BackupError::WrongIdentity,
        // The scrypt stanza's AEAD fails: the passphrase is wrong (age
        // cannot tell this from a modified stanza body).
        D::DecryptionFailed if scrypt => BackupError::WrongPassphrase,
        D::ExcessiveWork { required, .. } => BackupError::ExcessiveWork {
            found: required,
            max: MAX_SCRYPT_WORK_FACTOR,
        },
        D::Io(e) => crate::frame::Source::Age.classify(e, Section::Payload),
        D::UnknownFormat => BackupError::UnsupportedAgeFormat,
        _ => BackupError::Damaged {
            reason: Damage::AgeHeader,
        },
    }
}

/// Limits how many bytes the age header may take: age's header parser
/// reads as long as its input looks like a header. Lifted once the header
/// is read.
pub(crate) struct HeaderBudget<R> {
    inner: R,
    remaining: Rc<Cell<Option<u64>>>,
    /// The first bytes read (up to the age v1 intro line's length), to
    /// tell a damaged v1 header from another age version.
    start: Rc<std::cell::RefCell<Vec<u8>>>,
}

/// The first line of every age v1 file.
const AGE_V1_INTRO: &[u8] = b"age-encryption.org/v1\n";

impl<R: Read> Read for HeaderBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.remaining.get() {
            None => self.inner.read(buf),
            Some(0) if !buf.is_empty() => Err(io::Error::other(HeaderTooLarge)),
            Some(left) => {
                let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..max])?;
                self.remaining.set(Some(left - n as u64));
                let mut start = self.start.borrow_mut();
                let want = AGE_V1_INTRO.len().saturating_sub(start.len()).min(n);
                start.extend_from_slice(&buf[..want]);
                Ok(n)
            }
        }
    }
}

#[derive(Debug)]
struct HeaderTooLarge;

impl HeaderTooLarge {
    fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<HeaderTooLarge>())
    }
}

impl std::fmt::Display for HeaderTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("age header too large")
    }
}

impl std::error::Error for HeaderTooLarge {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_with_comments_parses_and_errors_name_lines_only() {
        let id = age::x25519::Identity::generate();
        let text = {
            use age::secrecy::ExposeSecret;
            format!(
                "# created: today\n# public key: {}\n\n  {}  \r\n",
                id.to_public(),
                id.to_string().expose_secret()
            )
        };
        let parsed = parse_identity_file(&text).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].recipient(), id.to_public().to_string());
        assert_eq!(format!("{:?}", parsed[0]), "AgeIdentity(…)");

        assert!(matches!(
            parse_identity_file("# nothing\n\n"),
            Err(BackupError::NoIdentity)
        ));
        let secretish = "AGE-SECRET-KEY-1NOTAREALKEYBUTSECRETLOOKING";
        let e = parse_identity_file(&format!("# x\n{secretish}\n")).unwrap_err();
        assert!(
            matches!(e, BackupError::InvalidIdentity { line: 2, .. }),
            "{e:?}"
        );
        assert!(!e.to_string().contains("NOTAREAL"));
        let e = parse_identity_file(&id.to_public().to_string()).unwrap_err();
        assert!(e.to_string().contains("recipient"), "{e}");
    }

    #[test]
    fn recipients_are_checked_and_secret_keys_not_echoed() {
        assert!(matches!(
            parse_recipients(&[]),
            Err(BackupError::NoRecipients)
        ));
        let e = parse_recipients(&["age1bogus".to_owned()]).unwrap_err();
        assert!(
            matches!(&e, BackupError::InvalidRecipient { recipient, .. } if recipient == "age1bogus"),
            "{e:?}"
        );
        assert!(e.to_string().contains("age1bogus"));
        let id = age::x25519::Identity::generate();
        let secret = {
            use age::secrecy::ExposeSecret;
            id.to_string().expose_secret().to_owned()
        };
        let e = parse_recipients(std::slice::from_ref(&secret)).unwrap_err();
        assert!(!e.to_string().contains(&secret[16..]), "{e}");
        assert!(!format!("{e:?}").contains(&secret[16..]));
        let ok = parse_recipients(&[format!(" {} ", id.to_public())]).unwrap();
        assert_eq!(ok.len(), 1);
    }

    #[test]
    fn header_budget_stops_reading() {
        let data = [b'x'; 100];
        let budget = Rc::new(Cell::new(Some(10)));
        let mut r = HeaderBudget {
            inner: &data[..],
            remaining: Rc::clone(&budget),
            start: Rc::default(),
        };
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).unwrap(), 10);
        let e = r.read(&mut buf).unwrap_err();
        assert!(HeaderTooLarge::is(&e));
        budget.set(None);
        assert_eq!(r.read(&mut buf).unwrap(), 64);
    }
}
