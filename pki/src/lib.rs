//! Node identity and the cluster certificate authority.
//!
//! moat-pki owns:
//!
//! * identifiers: [`NodeId`], [`ClusterId`], [`Role`], and how they are
//!   written into a certificate (subject, DNS names under [`NAME_ZONE`],
//!   key identifiers);
//! * keys and requests: [`PrivateKey`] (no `Debug`, zeroized), CSRs, and
//!   [`VerifiedCsr`], which keeps nothing of a request but its public key;
//! * the CA: [`RootCa`] creates the root, issues node certificates under
//!   the CA's own policy, and cross-signs a new root for rotation;
//! * verification: [`verify_chain`] turns a presented chain into an
//!   [`Identity`] or a typed [`CertError`];
//! * renewal timing: [`renewal_time`], a pure function;
//! * TLS: [`TlsContext`] builds rustls server and client configurations
//!   (TLS 1.3 only, X25519MLKEM768 preferred) whose certificate and roots
//!   can be swapped at run time;
//! * inspection: [`inspect`]; text forms: [`cert_pem`], [`fingerprint`];
//! * time: [`Clock`], read wherever a certificate is issued or checked.
//!
//! It never touches the network or the disk: callers seal keys (moat-lock)
//! and move bytes. Time and randomness are parameters wherever a test needs
//! to control them.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ca;
mod clock;
mod encode;
mod error;
mod id;
mod inspect;
mod key;
mod names;
mod renew;
mod tls;
mod verify;

pub use ca::{
    CertExpiry, DEFAULT_ROOT_VALIDITY, IssuedCert, MAX_CLOCK_SKEW, RootCa, RootOptions,
    WORKLOAD_OU, WorkloadTtl, compact_duration, spiffe_id,
};
pub use clock::{Clock, SystemClock};
pub use encode::{cert_pem, csr_pem, fingerprint, pem_encode};
pub use error::{CertError, Error, IdError, RoleError};
pub use id::{ClusterId, ID_CHARS, NodeId, Role};
pub use inspect::{CertReport, inspect};
pub use key::{KeyAlgorithm, MAX_CSR_BYTES, PrivateKey, VerifiedCsr};
pub use names::{NAME_ZONE, node_dns_name};
pub use renew::{RENEW_FROM, RENEW_UNTIL, renewal_time};
pub use tls::{
    Credentials, MANAGER_SERVER_NAME, TlsContext, TlsSummary, bootstrap_client_config,
    manager_server_name, provider, tls_summary,
};
pub use verify::{
    Identity, MAX_CERT_BYTES, MAX_CHAIN_LEN, TrustRoots, Usage, issued_by, verify_chain,
    verify_possession, verify_workload,
};

/// Re-exported so callers name the same DER and time types.
pub use rustls::pki_types::CertificateDer;
/// PEM decoding of certificates and keys (rustls's `PemObject`).
pub use rustls::pki_types::pem;
pub use time::OffsetDateTime;
