//! The policy: what the checks hold the inventory to, its defaults and its
//! TOML file format (see the crate root).

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use time::Duration;

use crate::{PolicyError, Severity};

/// Largest policy accepted, in bytes; [`Policy::parse`] refuses more
/// before parsing, and a caller reading a file should stop reading there.
pub const MAX_POLICY_BYTES: u64 = 64 * 1024;

/// What the report checks the inventory against. Every key is optional in
/// the policy file; [`Policy::default`] holds the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// A node certificate with less than this part of its lifetime left is
    /// a finding (high; expired: critical).
    pub cert_renew_fraction: Fraction,
    /// Node certificates made to live longer than this are a finding
    /// (a stolen one stays good that long).
    pub node_cert_max_lifetime: PolicyDuration,
    /// The root CA expiring sooner than this is a finding.
    pub root_ca_min_remaining: PolicyDuration,
    /// A join token older than this is a finding.
    pub token_max_age: PolicyDuration,
    /// Autolock off is a finding.
    pub require_autolock: bool,
    /// A data encryption key older than this is a finding.
    pub dek_max_age: PolicyDuration,
    /// An unlock key older than this is a finding.
    pub unlock_key_max_age: PolicyDuration,
    /// A secret whose latest version is older than this is a finding
    /// (configs are not checked).
    pub secret_max_age: PolicyDuration,
    /// A service whose tasks get no workload identity (`--no-identity`)
    /// is a finding.
    pub require_workload_identity: bool,
    /// Key algorithms accepted for the root CA and node certificates
    /// (compared ignoring case).
    pub allowed_algorithms: Vec<String>,
    /// TLS versions below this one are findings.
    pub min_tls_version: TlsVersion,
    /// Findings at or above this severity make the report fail.
    pub fail_on: Severity,
}

impl Default for Policy {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            cert_renew_fraction: Fraction(0.25),
            node_cert_max_lifetime: PolicyDuration(StdDuration::from_secs(7 * DAY)),
            root_ca_min_remaining: PolicyDuration(StdDuration::from_secs(365 * DAY)),
            token_max_age: PolicyDuration(StdDuration::from_secs(30 * DAY)),
            require_autolock: true,
            dek_max_age: PolicyDuration(StdDuration::from_secs(90 * DAY)),
            unlock_key_max_age: PolicyDuration(StdDuration::from_secs(180 * DAY)),
            secret_max_age: PolicyDuration(StdDuration::from_secs(90 * DAY)),
            require_workload_identity: true,
            allowed_algorithms: ["ECDSA P-256", "ECDSA P-384", "Ed25519"]
                .map(String::from)
                .to_vec(),
            min_tls_version: TlsVersion::Tls13,
            fail_on: Severity::High,
        }
    }
}

impl Policy {
    /// Parses a policy file's bytes: UTF-8 TOML, at most
    /// [`MAX_POLICY_BYTES`] (checked first). Keys left out keep their
    /// defaults; an unknown key, a wrong type or a bad value is an error
    /// naming it.
    pub fn parse(bytes: &[u8]) -> Result<Policy, PolicyError> {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if len > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                len,
                max: MAX_POLICY_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(PolicyError::NotText)?;
        toml::from_str(text).map_err(|e| PolicyError::Invalid {
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Whether `algorithm` is one of `allowed_algorithms` (ignoring case
    /// and surrounding spaces).
    pub fn allows(&self, algorithm: &str) -> bool {
        self.allowed_algorithms
            .iter()
            .any(|a| a.trim().eq_ignore_ascii_case(algorithm.trim()))
    }

    /// Whether `severity` is at or above `fail_on`.
    pub fn fails_on(&self, severity: Severity) -> bool {
        severity >= self.fail_on
    }
}

/// A part of a whole, from 0 to 1 (`0.25`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Fraction(f64);

impl Fraction {
    /// The value, from 0 to 1.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Fraction {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Fraction(v))
        } else {
            Err(format!(
                "{v} is not a fraction between 0 and 1 (0.25 is a quarter)"
            ))
        }
    }
}

impl From<Fraction> for f64 {
    fn from(f: Fraction) -> f64 {
        f.0
    }
}

/// A duration written as humantime text: `365d`, `30days`, `12h`, `90m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PolicyDuration(StdDuration);

impl PolicyDuration {
    /// As a signed `time` duration (saturating).
    pub(crate) fn signed(self) -> Duration {
        Duration::try_from(self.0).unwrap_or(Duration::MAX)
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl TryFrom<String> for PolicyDuration {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(PolicyDuration)
            .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. `30d`, `12h` or `90m`"))
    }
}

impl From<PolicyDuration> for String {
    fn from(d: PolicyDuration) -> String {
        d.to_string()
    }
}

impl fmt::Display for PolicyDuration {
    /// The largest whole unit: `365d`, `36h`, `90m`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() != 0 || secs == 0 {
            return write!(f, "{}", humantime::format_duration(self.0));
        }
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if secs.is_multiple_of(n) {
                return write!(f, "{}{unit}", secs / n);
            }
        }
        write!(f, "{secs}s")
    }
}

/// A TLS (or SSL) protocol version, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TlsVersion {
    /// SSL 2.0.
    Ssl2,
    /// SSL 3.0.
    Ssl3,
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// `TLSv1.3` and the like.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Ssl2 => "SSLv2",
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls10 => "TLSv1.0",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    /// Accepts `TLSv1.3`, `TLSv1_3` (rustls), `TLS 1.3`, `tls1.3`, and
    /// `TLSv1` for 1.0.
    fn from_str(s: &str) -> Result<Self, String> {
        let norm: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != 'v' && *c != 'V')
            .map(|c| {
                if c == '_' {
                    '.'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        Ok(match norm.as_str() {
            "ssl2" | "ssl2.0" => TlsVersion::Ssl2,
            "ssl3" | "ssl3.0" => TlsVersion::Ssl3,
            "tls1" | "tls1.0" => TlsVersion::Tls10,
            "tls1.1" => TlsVersion::Tls11,
            "tls1.2" => TlsVersion::Tls12,
            "tls1.3" => TlsVersion::Tls13,
            _ => {
                return Err(format!(
                    "`{s}` is not a TLS version (TLSv1.0, TLSv1.1, TLSv1.2 or TLSv1.3)"
                ));
            }
        })
    }
}

impl TryFrom<String> for TlsVersion {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<TlsVersion> for String {
    fn from(v: TlsVersion) -> String {
        v.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;

    /// Found by the `policy` fuzz target: a fraction printed as the
    /// shortest decimal that reads back to it must read back exactly
    /// (serde_json's default float parser could be one unit off).
    #[test]
    fn a_policys_json_reads_back_to_the_same_policy_to_the_last_bit() {
        let p = Policy::parse(
            b"cert_renew_fraction = 0.0000000000000000000000000000000000000111609206765412825310\n",
        )
        .unwrap();
        let json = serde_json::to_string(&p).unwrap();
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.cert_renew_fraction.get().to_bits(),
            p.cert_renew_fraction.get().to_bits(),
            "{json}"
        );
        assert_eq!(back, p);
    }

    #[test]
    fn an_empty_policy_file_is_the_defaults() {
        let p = Policy::parse(b"# nothing\n").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(Policy::parse(b"").unwrap(), Policy::default());
        assert_eq!(p.cert_renew_fraction.get(), 0.25);
        assert_eq!(p.root_ca_min_remaining.to_string(), "365d");
        assert_eq!(p.token_max_age.to_string(), "30d");
        assert!(p.require_autolock);
        assert!(p.require_workload_identity);
        assert_eq!(p.dek_max_age.to_string(), "90d");
        assert_eq!(p.unlock_key_max_age.to_string(), "180d");
        assert_eq!(
            p.allowed_algorithms,
            ["ECDSA P-256", "ECDSA P-384", "Ed25519"]
        );
        assert_eq!(p.min_tls_version, TlsVersion::Tls13);
        assert_eq!(p.fail_on, Severity::High);
    }

    #[test]
    fn a_policy_file_overrides_what_it_names() {
        let p = Policy::parse(
            br#"
cert_renew_fraction = 0.4
root_ca_min_remaining = "2y"
token_max_age = "7days"
require_autolock = false
require_workload_identity = false
dek_max_age = "30d"
unlock_key_max_age = "12h"
allowed_algorithms = ["ECDSA P-384"]
min_tls_version = "TLSv1.2"
fail_on = "medium"
"#,
        )
        .unwrap();
        assert_eq!(p.cert_renew_fraction.get(), 0.4);
        assert_eq!(p.token_max_age.to_string(), "7d");
        assert!(!p.require_autolock);
        assert!(!p.require_workload_identity);
        assert_eq!(p.unlock_key_max_age.to_string(), "12h");
        assert_eq!(p.allowed_algorithms, ["ECDSA P-384"]);
        assert_eq!(p.min_tls_version, TlsVersion::Tls12);
        assert_eq!(p.fail_on, Severity::Medium);
        // A policy's JSON reads back as the same policy.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), p);
        // And a key left out keeps its default.
        let p = Policy::parse(b"token_max_age = \"1d\"").unwrap();
        assert_eq!(p.dek_max_age, Policy::default().dek_max_age);
    }

    fn invalid(text: &str) -> String {
        let e = Policy::parse(text.as_bytes()).unwrap_err();
        assert!(matches!(e, PolicyError::Invalid { .. }), "{e:?}");
        e.to_string()
    }

    #[test]
    fn an_unknown_policy_key_is_rejected_by_name() {
        let e = invalid("token_max_age = \"30d\"\ntoken_maxage = \"30d\"\n");
        assert!(e.contains("unknown field `token_maxage`"), "{e}");
    }

    #[test]
    fn bad_policy_values_are_rejected() {
        let e = invalid("dek_max_age = \"90 fortnights\"");
        assert!(e.contains("`90 fortnights` is not a duration"), "{e}");
        let e = invalid("dek_max_age = 90");
        assert!(e.contains("dek_max_age") || e.contains("string"), "{e}");
        let e = invalid("cert_renew_fraction = 1.5");
        assert!(e.contains("not a fraction between 0 and 1"), "{e}");
        let e = invalid("min_tls_version = \"TLSv1.4\"");
        assert!(e.contains("is not a TLS version"), "{e}");
        let e = invalid("fail_on = \"severe\"");
        assert!(e.contains("severe"), "{e}");
        let e = invalid("this is not toml");
        assert!(e.contains("line 1"), "{e}");
        let e = Policy::parse(b"fail_on = \"\xff\"").unwrap_err();
        assert!(matches!(e, PolicyError::NotText(_)), "{e:?}");
        assert!(e.to_string().contains("not UTF-8 text"), "{e}");
    }

    /// Guards: the policy comes from a file; its size is bounded before
    /// any parsing.
    #[test]
    fn an_oversize_policy_is_refused_before_parsing() {
        // Not even TOML: it must be the size that is refused.
        let text = vec![b'\xff'; usize::try_from(MAX_POLICY_BYTES).unwrap() + 1];
        let e = Policy::parse(&text).unwrap_err();
        assert_eq!(
            e,
            PolicyError::TooLarge {
                len: MAX_POLICY_BYTES + 1,
                max: MAX_POLICY_BYTES
            }
        );
        assert!(e.to_string().contains("larger than the 65536 bytes"), "{e}");
        // Exactly the limit is parsed.
        let mut text = b"# padding\n".repeat(6553);
        text.resize(usize::try_from(MAX_POLICY_BYTES).unwrap(), b'\n');
        assert_eq!(Policy::parse(&text).unwrap(), Policy::default());
    }

    #[test]
    fn durations_print_as_their_largest_whole_unit() {
        let d = |s: &str| PolicyDuration::try_from(s.to_owned()).unwrap().to_string();
        assert_eq!(d("30days"), "30d");
        assert_eq!(d("36h"), "36h");
        assert_eq!(d("90m"), "90m");
        assert_eq!(d("45s"), "45s");
        assert_eq!(d("0s"), "0s");
        assert_eq!(d("1500ms"), "1s 500ms");
    }

    #[test]
    fn tls_versions_parse_in_the_usual_spellings() {
        for s in ["TLSv1.3", "TLSv1_3", "TLS 1.3", "tls1.3"] {
            assert_eq!(s.parse::<TlsVersion>().unwrap(), TlsVersion::Tls13, "{s}");
        }
        assert_eq!("TLSv1".parse::<TlsVersion>().unwrap(), TlsVersion::Tls10);
        assert!(TlsVersion::Tls12 < TlsVersion::Tls13);
        assert!("QUICv9".parse::<TlsVersion>().is_err());
    }
}
