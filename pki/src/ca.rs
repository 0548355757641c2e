//! The cluster certificate authority: root creation, node certificate
//! issuance, and cross-signing for root rotation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use rand_core::{OsRng, RngCore};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData, SanType,
    SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::names::{key_identifier, node_san_names, subject_key_identifier};
use crate::verify::{parse_cert, subject_attr};
use crate::{CertError, ClusterId, KeyAlgorithm, NodeId, PrivateKey, Role, VerifiedCsr};

/// Default lifetime of a root CA certificate: 10 years.
pub const DEFAULT_ROOT_VALIDITY: StdDuration = StdDuration::from_secs(10 * 365 * 86400);

/// Longest back-dating of `NotBefore` to absorb clock skew between nodes.
///
/// A node certificate is valid from `now - min(5 minutes, lifetime / 10)`:
/// five minutes for the default 24-hour certificate, six seconds for a
/// one-minute one, so short lifetimes are not swallowed by the margin.
pub const MAX_CLOCK_SKEW: StdDuration = StdDuration::from_secs(5 * 60);

/// The lifetime of node certificates, within the accepted range of one
/// minute to one year. Parses human durations: `24h`, `90d`, `30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertExpiry(StdDuration);

impl CertExpiry {
    /// Shortest accepted lifetime.
    pub const MIN: StdDuration = StdDuration::from_secs(60);
    /// Longest accepted lifetime.
    pub const MAX: StdDuration = StdDuration::from_secs(365 * 86400);
    /// Default lifetime: 24 hours.
    pub const DEFAULT: CertExpiry = CertExpiry(StdDuration::from_secs(24 * 3600));

    /// Checks that `lifetime` is within [`CertExpiry::MIN`]..=[`CertExpiry::MAX`].
    pub fn new(lifetime: StdDuration) -> Result<Self, CertError> {
        if (Self::MIN..=Self::MAX).contains(&lifetime) {
            Ok(Self(lifetime))
        } else {
            Err(CertError::ValidityOutOfRange {
                requested: humantime::format_duration(lifetime).to_string(),
                min: compact_duration(Self::MIN),
                max: compact_duration(Self::MAX),
            })
        }
    }

    /// A requested lifetime in seconds, or the default when none was
    /// asked for, checked as [`CertExpiry::new`] does.
    pub fn from_secs_or_default(secs: Option<u64>) -> Result<Self, CertError> {
        secs.map_or(Ok(Self::DEFAULT), |s| Self::new(StdDuration::from_secs(s)))
    }

    /// The lifetime.
    pub fn duration(self) -> StdDuration {
        self.0
    }

    /// How far `NotBefore` is moved back (see [`MAX_CLOCK_SKEW`]).
    pub fn backdate(self) -> StdDuration {
        (self.0 / 10).min(MAX_CLOCK_SKEW)
    }
}

/// `d` in one unit, the largest that divides it, days only beyond one
/// (`365d`, `24h`, `1m`, `90s`): how a lifetime's limits are written in
/// messages and help, in a form humantime (and so `--cert-expiry`) reads
/// back. Below a second, or not whole seconds: humantime's form.
pub fn compact_duration(d: StdDuration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return humantime::format_duration(d).to_string();
    }
    let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|&(size, _)| secs.is_multiple_of(size) && (size < 86_400 || secs > size))
        .map_or((secs, "s"), |(size, unit)| (secs / size, unit));
    format!("{n}{unit}")
}

impl Default for CertExpiry {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for CertExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl FromStr for CertExpiry {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = humantime::parse_duration(s).map_err(|e| CertError::ValidityOutOfRange {
            requested: format!("{s:?} ({e})"),
            min: compact_duration(Self::MIN),
            max: compact_duration(Self::MAX),
        })?;
        Self::new(d)
    }
}

/// The `OU` of workload certificates: no node role has it.
pub const WORKLOAD_OU: &str = "moat-workload";

/// The SPIFFE ID of a service's tasks: `spiffe://<cluster>/service/<name>`
/// (the cluster id is the trust domain). `service` must be a valid path
/// segment: letters, digits, `.`, `-` and `_`, and not `.` or `..`.
pub fn spiffe_id(cluster: &ClusterId, service: &str) -> Result<String, CertError> {
    let ok = !service.is_empty()
        && service.len() <= 255
        && service != "."
        && service != ".."
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(CertError::generation(
            "workload certificate",
            format!("service name {service:?} is not a SPIFFE path segment"),
        ));
    }
    Ok(format!("spiffe://{cluster}/service/{service}"))
}

/// The lifetime of a workload certificate (a service's `--identity-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkloadTtl(StdDuration);

impl WorkloadTtl {
    /// Shortest accepted lifetime: 5 minutes.
    pub const MIN: StdDuration = StdDuration::from_secs(5 * 60);
    /// Longest accepted lifetime: 24 hours.
    pub const MAX: StdDuration = StdDuration::from_secs(24 * 3600);
    /// Default lifetime: 1 hour.
    pub const DEFAULT: WorkloadTtl = WorkloadTtl(StdDuration::from_secs(3600));

    /// Checks that `lifetime` is within [`WorkloadTtl::MIN`]..=[`WorkloadTtl::MAX`].
    pub fn new(lifetime: StdDuration) -> Result<Self, CertError> {
        if (Self::MIN..=Self::MAX).contains(&lifetime) {
            Ok(Self(lifetime))
        } else {
            Err(CertError::ValidityOutOfRange {
                requested: humantime::format_duration(lifetime).to_string(),
                min: compact_duration(Self::MIN),
                max: compact_duration(Self::MAX),
            })
        }
    }

    /// The lifetime.
    pub fn duration(self) -> StdDuration {
        self.0
    }
}

/// Choices for a new root CA.
#[derive(Debug, Clone)]
pub struct RootOptions {
    /// Key algorithm (ECDSA P-256 unless asked otherwise).
    pub algorithm: KeyAlgorithm,
    /// Lifetime of the root certificate.
    pub validity: StdDuration,
    /// Which root of the cluster this is: 1 for the first, +1 per rotation.
    /// Written into the subject so successive roots have distinct names.
    pub generation: u32,
}

impl Default for RootOptions {
    fn default() -> Self {
        Self {
            algorithm: KeyAlgorithm::default(),
            validity: DEFAULT_ROOT_VALIDITY,
            generation: 1,
        }
    }
}

/// A root certificate authority of one cluster: its certificate and key.
///
/// No `Debug`: it holds the CA private key.
pub struct RootCa {
    cluster: ClusterId,
    cert: CertificateDer<'static>,
    /// The CA key with the subject, key usages and key-identifier method of
    /// `cert`, parsed once.
    issuer: Issuer<'static, PrivateKey>,
}

/// A node certificate fresh from the CA.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// Its serial number, lower-case hex.
    pub serial: String,
    /// Start of validity (back-dated, see [`MAX_CLOCK_SKEW`]).
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl RootCa {
    /// Creates a self-signed root for `cluster`, valid from `now`.
    pub fn generate(
        cluster: ClusterId,
        options: &RootOptions,
        now: OffsetDateTime,
    ) -> Result<Self, CertError> {
        let key = PrivateKey::generate(options.algorithm)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = root_subject(&cluster, options.generation);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = ca_key_usages();
        params.serial_number = Some(random_serial(&mut OsRng));
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + to_time(options.validity);
        params.key_identifier_method = KeyIdMethod::PreSpecified(key_identifier(key.der_bytes()));
        let cert = params
            .self_signed(&key.pair)
            .map_err(|e| CertError::generation("root CA certificate", e))?;
        Self::from_parts(cert.der().clone(), key)
    }

    /// Rebuilds a root from its stored certificate and key, checking that
    /// they belong together and that the certificate is a moat root.
    pub fn from_parts(cert: CertificateDer<'static>, key: PrivateKey) -> Result<Self, CertError> {
        let parsed = parse_cert(&cert)?;
        if !parsed.is_ca() {
            return Err(CertError::NotACa {
                reason: "basic constraints do not allow it to issue certificates".into(),
            });
        }
        if parsed.public_key().raw != key.public_key_der().as_slice() {
            return Err(CertError::KeyMismatch);
        }
        let cluster: ClusterId = subject_attr(&parsed, DnType::OrganizationName)?
            .parse()
            .map_err(|e| CertError::NotACa {
                reason: format!("subject O is not a moat cluster id ({e})"),
            })?;
        let issuer = Issuer::from_ca_cert_der(&cert, key)
            .map_err(|e| CertError::malformed("root CA certificate", e))?;
        Ok(Self {
            cluster,
            cert,
            issuer,
        })
    }

    /// The cluster this root serves.
    pub fn cluster_id(&self) -> ClusterId {
        self.cluster
    }

    /// The root certificate, DER.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The root certificate, PEM.
    pub fn certificate_pem(&self) -> String {
        crate::verify::to_pem(&self.cert)
    }

    /// The CA private key (to seal it into the store).
    pub fn key(&self) -> &PrivateKey {
        self.issuer.key()
    }

    /// Issues a node certificate for the key in `csr`.
    ///
    /// Everything but the public key is the CA's choice: subject
    /// `CN=<node>, OU=moat-<role>, O=<cluster>`, the DNS names
    /// `<node>.<cluster>.moat.internal` and `<role>.moat.internal`, TLS
    /// client and server usage, subject and authority key identifiers, a
    /// random 128-bit serial, and a lifetime of `expiry` from `now` with
    /// `NotBefore` back-dated by [`CertExpiry::backdate`].
    pub fn issue(
        &self,
        csr: &VerifiedCsr,
        node: NodeId,
        role: Role,
        expiry: CertExpiry,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, CertError> {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.to_string());
        dn.push(DnType::OrganizationalUnitName, role.organizational_unit());
        dn.push(DnType::OrganizationName, self.cluster.to_string());
        let sans = node_san_names(&node, role, &self.cluster)
            .into_iter()
            .map(|n| {
                n.try_into()
                    .map(SanType::DnsName)
                    .map_err(|e| CertError::generation("node certificate", e))
            })
            .collect::<Result<_, _>>()?;
        self.sign_leaf(
            csr,
            dn,
            sans,
            expiry.duration(),
            expiry.backdate(),
            now,
            "node certificate",
            Vec::new(),
        )
    }

    /// Issues a workload certificate, an X.509-SVID in SPIFFE's profile,
    /// for the key in `csr`: subject `CN=<task>, OU=moat-workload,
    /// O=<cluster>` (an `OU` no node authorization accepts, so it can never
    /// pass for a node), exactly one URI name
    /// `spiffe://<cluster>/service/<service>`, not a CA, digital signature,
    /// TLS client and server usage, key identifiers, a random serial, and a
    /// lifetime of `ttl` from `now` (`NotBefore` back-dated by a tenth of
    /// it, at most [`MAX_CLOCK_SKEW`]).
    pub fn issue_workload(
        &self,
        csr: &VerifiedCsr,
        task: &str,
        service: &str,
        ttl: WorkloadTtl,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, CertError> {
        let id = spiffe_id(&self.cluster, service)?;
        if task.is_empty()
            || task.len() > 128
            || !task
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CertError::generation(
                "workload certificate",
                format!("task id {task:?} is not 1 to 128 letters, digits, '-' or '_'"),
            ));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, task);
        dn.push(DnType::OrganizationalUnitName, WORKLOAD_OU);
        dn.push(DnType::OrganizationName, self.cluster.to_string());
        let uri = id
            .try_into()
            .map_err(|e| CertError::generation("workload certificate", e))?;
        let lifetime = ttl.duration();
        self.sign_leaf(
            csr,
            dn,
            vec![SanType::URI(uri)],
            lifetime,
            (lifetime / 10).min(MAX_CLOCK_SKEW),
            now,
            "workload certificate",
            // SPIFFE's X.509-SVID profile wants basic constraints present
            // in a leaf (clients such as the `spiffe` crate refuse one
            // without): cA=FALSE is the default, so DER writes it as an
            // empty SEQUENCE.
            vec![not_a_ca_extension()],
        )
    }

    /// Signs a TLS leaf (client and server usage) for `csr`'s key.
    #[allow(clippy::too_many_arguments)]
    fn sign_leaf(
        &self,
        csr: &VerifiedCsr,
        dn: DistinguishedName,
        sans: Vec<SanType>,
        lifetime: StdDuration,
        backdate: StdDuration,
        now: OffsetDateTime,
        what: &'static str,
        extra: Vec<CustomExtension>,
    ) -> Result<IssuedCert, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let serial = random_serial(&mut OsRng);
        params.serial_number = Some(serial.clone());
        // X.509 times have whole seconds; keep the report equal to the certificate.
        let now = now.replace_nanosecond(0).unwrap_or(now);
        params.not_before = now - to_time(backdate);
        params.not_after = now + to_time(lifetime);
        // A subject key identifier, and the root's as the authority key
        // identifier. (rcgen writes a leaf's subject key identifier only
        // with IsCa::ExplicitNoCa, whose basic constraints encode the
        // default cA=FALSE explicitly, which DER forbids: pkilint FATAL.)
        params.custom_extensions = vec![subject_key_identifier_extension(&key_identifier(
            csr.public_key().der_bytes(),
        ))];
        params.custom_extensions.extend(extra);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(csr.public_key(), &self.issuer)
            .map_err(|e| CertError::generation(what, e))?;
        Ok(IssuedCert {
            der: cert.der().clone(),
            serial: hex(&serial.to_bytes()),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }

    /// Verifies a DER CSR and issues a certificate for it (see [`RootCa::issue`]).
    pub fn sign_csr(
        &self,
        csr_der: &[u8],
        node: NodeId,
        role: Role,
        expiry: CertExpiry,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, CertError> {
        self.issue(&VerifiedCsr::from_der(csr_der)?, node, role, expiry, now)
    }

    /// Cross-signs `new_root` with this (old) root for a root rotation.
    ///
    /// The result is an intermediate with the new root's subject and public
    /// key, issued by this root. A node holding a leaf from the new root
    /// presents it with this intermediate, so peers that still trust only
    /// the old root accept it, and peers that already trust the new root
    /// accept the leaf directly. Valid until the earlier of the two roots'
    /// expiries.
    pub fn cross_sign(
        &self,
        new_root: &RootCa,
        now: OffsetDateTime,
    ) -> Result<CertificateDer<'static>, CertError> {
        if new_root.cluster != self.cluster {
            return Err(CertError::WrongCluster {
                expected: self.cluster.to_string(),
                found: new_root.cluster.to_string(),
            });
        }
        let new_cert = parse_cert(&new_root.cert)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = root_subject_of(&new_cert)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = ca_key_usages();
        params.serial_number = Some(random_serial(&mut OsRng));
        params.not_before = now - Duration::minutes(5);
        params.not_after = parse_cert(&self.cert)?
            .validity()
            .not_after
            .to_datetime()
            .min(new_cert.validity().not_after.to_datetime());
        // The new root's own key identifier, so that leaves naming it as
        // their authority match this intermediate too.
        params.key_identifier_method = KeyIdMethod::PreSpecified(
            subject_key_identifier(&new_cert)
                .unwrap_or_else(|| key_identifier(new_root.key().der_bytes())),
        );
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(new_root.key(), &self.issuer)
            .map_err(|e| CertError::generation("cross-signed root certificate", e))?;
        // Path building matches names byte for byte: the intermediate must
        // carry exactly the new root's subject encoding.
        if parse_cert(cert.der())?.subject().as_raw() != new_cert.subject().as_raw() {
            return Err(CertError::NotACa {
                reason: "the new root's subject is not in moat's encoding; cannot cross-sign it"
                    .into(),
            });
        }
        Ok(cert.der().clone())
    }
}

fn root_subject(cluster: &ClusterId, generation: u32) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("moat root CA {generation}"));
    dn.push(DnType::OrganizationName, cluster.to_string());
    dn
}

/// Rebuilds the subject of a moat root certificate from its CN and O.
fn root_subject_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<DistinguishedName, CertError> {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject_attr(cert, DnType::CommonName)?);
    dn.push(
        DnType::OrganizationName,
        subject_attr(cert, DnType::OrganizationName)?,
    );
    Ok(dn)
}

/// The subjectKeyIdentifier extension (RFC 5280 §4.2.1.2, OID 2.5.29.14,
/// not critical) for `key_id`: an OCTET STRING of at most 20 bytes.
fn subject_key_identifier_extension(key_id: &[u8]) -> CustomExtension {
    let mut value = Vec::with_capacity(key_id.len() + 2);
    value.push(0x04); // OCTET STRING
    value.push(key_id.len() as u8); // short form: key_id is 20 bytes
    value.extend_from_slice(key_id);
    CustomExtension::from_oid_content(&[2, 5, 29, 14], value)
}

/// Basic constraints with cA=FALSE, critical: the value is an empty
/// SEQUENCE (DER leaves a default out).
fn not_a_ca_extension() -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x00]);
    ext.set_criticality(true);
    ext
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ]
}

/// A positive, non-zero 128-bit serial from `rng` (RFC 5280 allows 20 octets).
fn random_serial(rng: &mut impl RngCore) -> SerialNumber {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // no leading zero octet, so the encoding is 16 bytes
    SerialNumber::from_slice(&bytes)
}

fn to_time(d: StdDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::MAX)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}
