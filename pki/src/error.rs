//! Errors of moat-pki.

use time::OffsetDateTime;

/// Every error moat-pki returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identifier's text form was rejected.
    #[error(transparent)]
    Id(#[from] IdError),
    /// A role name was rejected.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// A certificate, key or signing request was rejected.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// An identifier's text form was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct IdError {
    pub(crate) what: &'static str,
    pub(crate) reason: moat_codec::DecodeError,
}

/// A role name other than `manager` or `worker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role (expected \"manager\" or \"worker\")")]
pub struct RoleError;

/// Why a certificate, private key or certificate signing request was
/// rejected, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The bytes are not well-formed DER or PEM of the expected kind.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being parsed ("certificate", "certificate signing request", …).
        what: &'static str,
        /// What the parser reported.
        reason: String,
    },
    /// A signature (on a CSR or somewhere in a certificate chain) does not verify.
    #[error("bad signature on the {what}: it was altered or signed by another key")]
    BadSignature {
        /// What carried the signature.
        what: &'static str,
    },
    /// The key algorithm is not one moat issues certificates for.
    #[error(
        "unsupported key algorithm {algorithm} (moat accepts ECDSA P-256, ECDSA P-384 and Ed25519 keys)"
    )]
    UnsupportedKeyAlgorithm {
        /// The algorithm found, by name or OID.
        algorithm: String,
    },
    /// A requested certificate lifetime is outside the accepted range.
    #[error("certificate validity {requested} is out of range: it must be between {min} and {max}")]
    ValidityOutOfRange {
        /// What was asked for.
        requested: String,
        /// Shortest lifetime accepted ([`crate::compact_duration`]).
        min: String,
        /// Longest lifetime accepted ([`crate::compact_duration`]).
        max: String,
    },
    /// The certificate's validity period ended.
    #[error("certificate expired at {not_after} (checked at {now}); the node must renew or rejoin")]
    Expired {
        /// End of validity.
        not_after: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },
    /// The certificate is not valid yet: a clock is wrong somewhere.
    #[error(
        "certificate is not valid before {not_before} (checked at {now}); check the clocks of both machines"
    )]
    NotYetValid {
        /// Start of validity.
        not_before: OffsetDateTime,
        /// The time of the check.
        now: OffsetDateTime,
    },
    /// The chain does not lead to any trusted root of this cluster.
    #[error("certificate is not issued by a trusted root of this cluster")]
    UnknownIssuer,
    /// The certificate is not allowed for this use (client or server authentication).
    #[error("certificate is not valid for TLS {usage} authentication")]
    WrongUsage {
        /// "client" or "server".
        usage: &'static str,
    },
    /// The certificate belongs to a different cluster.
    #[error("certificate belongs to cluster {found}, not to this cluster ({expected})")]
    WrongCluster {
        /// This cluster.
        expected: String,
        /// The certificate's `O`.
        found: String,
    },
    /// The certificate's role does not allow what was attempted.
    #[error("a {found} certificate was presented where a {expected} is required")]
    WrongRole {
        /// The role required.
        expected: crate::Role,
        /// The role in the certificate.
        found: crate::Role,
    },
    /// The certificate's subject is not a moat node subject.
    #[error("certificate subject is not a moat node identity: {reason}")]
    BadSubject {
        /// What is wrong with it.
        reason: String,
    },
    /// A new certificate names a different node than the one it replaces.
    #[error("certificate is for node {found}, expected node {expected}")]
    WrongNode {
        /// The node this process is.
        expected: String,
        /// The node in the certificate.
        found: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    /// The certificate is not a CA certificate, or is not usable as this cluster's root.
    #[error("not a usable root CA certificate: {reason}")]
    NotACa {
        /// Why.
        reason: String,
    },
    /// Certificate verification failed for another reason.
    #[error("certificate rejected: {reason}")]
    Rejected {
        /// The verifier's reason.
        reason: String,
    },
    /// Creating a key or certificate failed (the crypto library refused).
    #[error("could not create {what}: {reason}")]
    Generation {
        /// What was being made.
        what: &'static str,
        /// The library's reason.
        reason: String,
    },
}

impl CertError {
    pub(crate) fn malformed(what: &'static str, reason: impl std::fmt::Display) -> Self {
        CertError::Malformed {
            what,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn generation(what: &'static str, reason: impl std::fmt::Display) -> Self {
        CertError::Generation {
            what,
            reason: reason.to_string(),
        }
    }
}
