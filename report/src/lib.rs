//! moat's compliance policy: checks a cluster's crypto inventory against a
//! [`Policy`] and says what is wrong.
//!
//! This crate owns the policy (its defaults, its TOML file format and the
//! limit on its size), the checks, and their result: a list of [`Finding`]s,
//! each with a [`Severity`], the subject it is about, the problem and a fix
//! (a moat command or a runbook), sorted worst first; and the verdict
//! ([`fails`]: some finding at or above the policy's `fail_on`). The same
//! inventory, policy and time always give the same findings.
//!
//! It **never renders and never does I/O**: no table, JSON layout or HTML
//! (the CLI's `moat audit report` does those, and maps [`fails`] to its
//! exit code), no disk, network, environment or clock. The caller reads the
//! policy file and hands over its bytes ([`Policy::parse`] refuses more than
//! [`MAX_POLICY_BYTES`] before parsing), and passes the time `now`.
//! Inventory values are data from the cluster (a node picks its own host
//! name): nothing here panics on them, and a time that does not parse is
//! itself a finding. It may call `moat-api` (the inventory types,
//! [`CryptoInventory`]) and nothing else in moat.
//!
//! # API
//!
//! * [`Policy::parse`]`(bytes) -> Result<Policy, PolicyError>`; [`Policy::default`].
//! * [`findings`]`(&inventory, &policy, now) -> Vec<Finding>`, then
//!   [`worst`], [`fails`] and [`Summary::of`] over them.
//! * For renderers, so that they word things as the findings do:
//!   [`CertLife`] (a node certificate's time and part of its lifetime left),
//!   [`issued_by_root`], [`Policy::allows`], [`human_duration`],
//!   [`percent`], [`short_id`]; sample inventories in `fixtures` with the
//!   `fixtures` feature.
//!
//! # Policy file format
//!
//! UTF-8 TOML, at most [`MAX_POLICY_BYTES`] (64 KiB). Every key is
//! optional; a key left out keeps its default; an unknown key, a wrong type
//! or a value out of range is a [`PolicyError::Invalid`] naming it.
//! Durations are humantime text (`365d`, `30days`, `12h`, `90m`, `2y`) and
//! are written back as the largest whole unit (`365d`).
//!
//! | key | type | default |
//! |---|---|---|
//! | `cert_renew_fraction` | number, 0 to 1 | `0.25` |
//! | `node_cert_max_lifetime` | duration | `"7d"` |
//! | `root_ca_min_remaining` | duration | `"365d"` |
//! | `token_max_age` | duration | `"30d"` |
//! | `require_autolock` | boolean | `true` |
//! | `dek_max_age` | duration | `"90d"` |
//! | `unlock_key_max_age` | duration | `"180d"` |
//! | `secret_max_age` | duration | `"90d"` |
//! | `require_workload_identity` | boolean | `true` |
//! | `allowed_algorithms` | list of strings, compared ignoring case | `["ECDSA P-256", "ECDSA P-384", "Ed25519"]` |
//! | `min_tls_version` | `TLSv1.0`, `TLSv1.1`, `TLSv1.2` or `TLSv1.3` | `"TLSv1.3"` |
//! | `fail_on` | `info`, `low`, `medium`, `high` or `critical` | `"high"` |
//!
//! What each check looks at, its severity and its fix are listed in
//! `docs/audit-report.md`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod checks;
mod error;
mod finding;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod policy;
mod swarm;
mod text;

pub use checks::{CertLife, findings, issued_by_root};
pub use error::PolicyError;
pub use finding::{Finding, Severity, Summary, fails, worst};
pub use moat_api::{CryptoInventory, SwarmInventory};
pub use policy::{Fraction, MAX_POLICY_BYTES, Policy, PolicyDuration, TlsVersion};
pub use swarm::swarm_findings;
pub use text::{human_duration, percent, short_id};
