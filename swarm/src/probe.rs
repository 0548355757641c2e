//! A live look at a TLS port, such as a Docker Swarm manager's (2377):
//! the protocol versions, cipher suites and key-exchange groups it
//! accepts, and the certificate chain it presents. What
//! `moat audit report --docker-swarm DIR --probe ADDR:PORT` shows.
//!
//! # How
//!
//! 1. **Enumeration by hand-built ClientHellos**, one offer per connection
//!    (one version, or one cipher suite, or one group), reading only the
//!    server's first answer: a ServerHello or HelloRetryRequest naming
//!    what it chose, or an alert. This is protocol framing, not
//!    cryptography: no key is derived and nothing is encrypted. A TLS 1.3
//!    offer carries an *empty* `key_share`, so a server that supports one
//!    of the offered groups answers with a HelloRetryRequest naming it
//!    (and its cipher suite); a TLS 1.2 group counts as accepted when the
//!    server picks an ECDHE suite while that group is the only one
//!    offered.
//! 2. **One full handshake by rustls** (the aws-lc-rs provider, moat's own
//!    TLS client), which records the chain, what it negotiates and
//!    whether the server asks for a client certificate.
//!
//! # Worst case
//!
//! All connections go to the one socket address the given address
//! resolves to first: at most 4 (versions) + 38 × (versions accepted)
//! (suites) + 18 (groups) + 1, about 120 for a server that accepts every
//! version. Each connection's connect, send and reads together are bounded
//! by [`ProbeOptions::timeout`], the whole probe by
//! [`ProbeOptions::budget`]; what was left untested is said in the notes.
//! A server's answer is read with bounds: records of at most
//! [`MAX_RECORD_LEN`] bytes, a ServerHello of at most
//! [`MAX_SERVER_HELLO_LEN`], at most [`MAX_ANSWER_RECORDS`] records;
//! anything malformed is an error value, never a panic.
//!
//! # Danger
//!
//! The full handshake accepts any certificate chain
//! (`danger::InspectAnyServerCert`): this is an inspection, not a trust
//! decision. Nothing but the handshake and a `close_notify` is sent, and
//! the chain is reported, never trusted.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_api::{ProbeCert, ProbeGroup, ProbeNegotiated, ProbeSuite, TlsProbe};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::{CertificateDer, ServerName};

/// Largest TLS record read: 2^14 bytes of plaintext plus 256 of slack.
pub const MAX_RECORD_LEN: usize = 16 * 1024 + 256;

/// Largest ServerHello read (one with an `X25519MLKEM768` key share is
/// about 1,200 bytes).
pub const MAX_SERVER_HELLO_LEN: usize = 8 * 1024;

/// Largest Certificate message read (TLS 1.2 flights).
pub const MAX_CERTIFICATES_LEN: usize = 64 * 1024;

/// Most certificates read from a Certificate message.
pub const MAX_CHAIN_LEN: usize = 16;

/// Most records read from one answer (fragments of its messages and
/// change cipher spec records).
pub const MAX_ANSWER_RECORDS: usize = 32;

/// Swarm's default manager port, named in error hints.
pub const SWARM_MANAGER_PORT: u16 = 2377;

/// How to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeOptions {
    /// Bound on one connection: connecting, sending the hello and reading
    /// the answer (or the whole full handshake) together.
    pub timeout: Duration,
    /// Bound on the whole probe. When it runs out, what is left is not
    /// tried and the notes say so.
    pub budget: Duration,
    /// The server name sent (SNI). `None`, or an IP address, sends none.
    /// Default `swarm-manager`, a name every Swarm manager's certificate
    /// carries.
    pub server_name: Option<String>,
}

impl ProbeOptions {
    /// `timeout` per connection, a budget of 30 of them for the whole
    /// probe, and the server name `swarm-manager`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            budget: timeout.saturating_mul(30),
            server_name: Some("swarm-manager".to_owned()),
        }
    }
}

/// Why a probe could not be made at all. (A server refusing an offer is
/// not an error: it is what a probe measures.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The address is not `HOST:PORT`, or resolves to nothing.
    #[error("cannot use {address:?} as HOST:PORT (e.g. 10.0.0.5:2377): {reason}")]
    Address {
        /// The address given.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The server name cannot be sent as SNI (caller misuse).
    #[error("cannot send {name:?} as a TLS server name")]
    ServerName {
        /// The name given.
        name: String,
    },
    /// No TCP connection could be made.
    #[error(
        "cannot connect to {address} ({peer}): {source}; is the manager listening on {address}? \
         (Swarm's default manager port is 2377)"
    )]
    Connect {
        /// The address given.
        address: String,
        /// What it resolved to.
        peer: SocketAddr,
        /// The connection error.
        #[source]
        source: io::Error,
    },
    /// Something answered that is not a TLS server.
    #[error(
        "{address} does not speak TLS: it answered a ClientHello with {preview}; \
         is it a Swarm manager's port (2377 by default)?"
    )]
    NotTls {
        /// The address given.
        address: String,
        /// The first bytes of the answer, in hex and as text.
        preview: String,
    },
    /// The system's random number generator failed.
    #[error("no random bytes for a ClientHello")]
    Random,
    /// moat's own TLS client could not be configured (a bug in moat).
    #[error("the TLS client could not be configured: {0}")]
    Client(String),
}

/// Why a server's first answer could not be read: what
/// [`read_server_answer`] returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The connection ended before a complete answer.
    #[error("the server closed the connection without a complete answer")]
    Closed,
    /// The first bytes are not a TLS record.
    #[error("the answer is not TLS: it starts with {}", preview(.first_bytes))]
    NotTls {
        /// The bytes read (at most 5).
        first_bytes: Vec<u8>,
    },
    /// A length is over its bound.
    #[error("the answer has {what} of {len} bytes (at most {max} are read)")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The answer breaks the TLS framing.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// Reading failed (a timeout is `WouldBlock` or `TimedOut`).
    #[error("reading the answer: {0}")]
    Io(#[from] io::Error),
}

/// A server's first answer to a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAnswer {
    /// A ServerHello or a HelloRetryRequest, and what followed it.
    Hello {
        /// The ServerHello.
        hello: ServerHello,
        /// After a TLS 1.2 or earlier ServerHello, the rest of the flight
        /// (empty otherwise).
        flight: Tls12Flight,
    },
    /// An alert (the first one, if the record held several).
    Alert {
        /// 1 warning, 2 fatal.
        level: u8,
        /// The alert description (40 handshake_failure, 70
        /// protocol_version…; see [`alert_name`]).
        description: u8,
    },
}

/// What follows a TLS 1.2 (or earlier) ServerHello in the server's first
/// flight, in clear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls12Flight {
    /// The Certificate message's certificates (DER), leaf first.
    pub certificates: Vec<Vec<u8>>,
    /// The named group of an ECDHE ServerKeyExchange. (Read only when the
    /// message starts as an ECDHE one does; meaningful for ECDHE suites.)
    pub ecdhe_group: Option<u16>,
    /// Whether a CertificateRequest came.
    pub certificate_request: bool,
    /// Why the flight could not be read to its ServerHelloDone.
    pub error: Option<String>,
}

/// The parts of a ServerHello a probe looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The `legacy_version` field.
    pub legacy_version: u16,
    /// The version chosen: `supported_versions` when present, else
    /// `legacy_version` (0x0304 is TLS 1.3).
    pub version: u16,
    /// The cipher suite chosen.
    pub cipher_suite: u16,
    /// Whether this is a HelloRetryRequest (its random is the special
    /// value of RFC 8446 §4.1.3).
    pub hello_retry_request: bool,
    /// The group of the `key_share` extension: selected (in a
    /// HelloRetryRequest) or used (in a ServerHello).
    pub key_share_group: Option<u16>,
    /// The extension types, in order.
    pub extensions: Vec<u16>,
}

/// Probes `address` (`host:port`) with [`ProbeOptions::new`]`(timeout)`.
pub fn probe(address: &str, timeout: Duration) -> Result<TlsProbe, ProbeError> {
    probe_with(address, &ProbeOptions::new(timeout))
}

/// Probes `address` (`host:port`): see the module documentation.
///
/// Fails only when nothing could be measured: the address does not
/// resolve, the first connection fails, or what answers is not TLS.
/// Everything else (a timeout on one offer, a malformed answer) is left
/// out of the lists and said in [`TlsProbe::notes`].
pub fn probe_with(address: &str, options: &ProbeOptions) -> Result<TlsProbe, ProbeError> {
    let probed_at = rfc3339(time::OffsetDateTime::now_utc());
    let start = Instant::now();
    let peer = resolve(address)?;
    let server_name = match &options.server_name {
        None => None,
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|_| ProbeError::ServerName { name: name.clone() })?,
        ),
    };
    let sni = match &server_name {
        Some(ServerName::DnsName(dns)) => Some(dns.as_ref().to_owned()),
        _ => None,
    };
    let mut prober = Prober {
        address: address.to_owned(),
        peer,
        timeout: options.timeout,
        deadline: start + options.budget,
        sni,
        rng: SystemRandom::new(),
        untested: BTreeMap::new(),
        odd_alerts: BTreeMap::new(),
        notes: Vec::new(),
    };
    // A TLS 1.2 flight is in clear: its chain and certificate request.
    let mut tls12: Option<Tls12Flight> = None;

    // 1. Versions, newest first. The first connection also tells whether
    //    anything TLS listens there at all.
    let mut versions = Vec::new();
    for (i, &version) in VERSIONS.iter().enumerate() {
        let offer = Offer::version(version);
        let what = version_name(version).to_owned();
        let answer = prober.exchange(&offer)?;
        if i == 0 {
            prober.first_contact(&answer)?;
        }
        let Some((hello, flight)) = prober.judge(&what, answer) else {
            continue;
        };
        if hello.version == version {
            versions.push(version);
            if version <= TLS12 && tls12.as_ref().is_none_or(|f| f.certificates.is_empty()) {
                tls12 = Some(flight);
            }
        } else if hello.version > version {
            prober.notes.push(format!(
                "offered at most {what}, the server chose {} (a protocol violation)",
                version_name(hello.version)
            ));
        }
    }

    // 2. Cipher suites, one per connection, per accepted version.
    let mut cipher_suites = Vec::new();
    for &version in &versions {
        for suite in SUITES.iter().filter(|s| s.usable_in(version)) {
            let what = format!("{} {}", version_name(version), suite.name);
            let offer = Offer {
                suites: vec![suite.code],
                ..Offer::version(version)
            };
            let answer = prober.exchange(&offer)?;
            let Some((hello, _)) = prober.judge(&what, answer) else {
                continue;
            };
            if hello.version != version {
                continue;
            }
            if hello.cipher_suite != suite.code {
                prober.notes.push(format!(
                    "offered only {what}, the server chose suite 0x{:04x} (a protocol violation)",
                    hello.cipher_suite
                ));
                continue;
            }
            cipher_suites.push(suite.report(version));
        }
    }

    // 3. Key-exchange groups.
    let mut groups: Vec<(&Group, Vec<u16>)> = Vec::new();
    if versions.contains(&TLS12) {
        let cert_group = tls12
            .as_ref()
            .and_then(|f| f.certificates.first())
            .and_then(|leaf| ecdsa_group(leaf));
        for group in prober.tls12_groups(&cipher_suites, cert_group)? {
            groups.push((group, vec![TLS12]));
        }
    }
    if versions.iter().any(|&v| v < TLS12) {
        prober
            .notes
            .push("key-exchange groups under TLS 1.1 and 1.0 were not tried".to_owned());
    }
    if versions.contains(&TLS13) {
        for group in prober.tls13_groups()? {
            match groups.iter_mut().find(|(g, _)| g.code == group.code) {
                Some((_, versions)) => versions.push(TLS13),
                None => groups.push((group, vec![TLS13])),
            }
        }
    }
    groups.sort_by_key(|(g, _)| GROUPS.iter().position(|x| x.code == g.code));
    let key_exchange_groups: Vec<ProbeGroup> = groups
        .into_iter()
        .map(|(group, versions)| ProbeGroup {
            name: group.name.to_owned(),
            versions: versions
                .iter()
                .map(|&v| version_name(v).to_owned())
                .collect(),
            post_quantum: group.post_quantum,
        })
        .collect();

    // 4. One full handshake by moat's own client.
    let mut full = prober.full_handshake(server_name);
    let mut chain_from = "";
    if let Some(flight) = &tls12 {
        full.client_cert_requested |= flight.certificate_request;
        if full.chain.is_empty() && !flight.certificates.is_empty() {
            full.chain = flight
                .certificates
                .iter()
                .map(|c| CertificateDer::from(c.clone()))
                .collect();
            chain_from = "; the certificate chain was read from a TLS 1.2 handshake instead";
        }
        if let Some(e) = &flight.error {
            full.notes.push(format!(
                "the TLS 1.2 flight could not be read to its end: {e}"
            ));
        }
    }
    if let Some(e) = &full.error {
        let chain = match (full.chain.is_empty(), chain_from) {
            (true, _) => "; the certificate chain was not read",
            (false, from) => from,
        };
        full.notes.push(format!(
            "moat's TLS client (TLS 1.3 only) could not complete a handshake: {e}{chain}"
        ));
    }

    let mut notes = prober.finish_notes();
    notes.extend(full.notes);
    notes.push(format!(
        "tried {} cipher suites and {} key-exchange groups (those a Go or OpenSSL server may \
         serve); SSL 3.0 and older were not tried",
        SUITES.len(),
        GROUPS.len()
    ));
    Ok(TlsProbe {
        address: address.to_owned(),
        peer: peer.to_string(),
        probed_at,
        versions: versions
            .iter()
            .rev()
            .map(|&v| version_name(v).to_owned())
            .collect(),
        cipher_suites,
        post_quantum: key_exchange_groups.iter().any(|g| g.post_quantum),
        key_exchange_groups,
        client_cert_requested: full.client_cert_requested,
        chain: full
            .chain
            .iter()
            .enumerate()
            .map(|(i, der)| describe_cert(i, der))
            .collect(),
        negotiated: full.negotiated,
        notes,
    })
}

/// Reads a server's first answer to a ClientHello: its first alert, or
/// its ServerHello (or HelloRetryRequest) and, after a TLS 1.2 or earlier
/// ServerHello, the rest of its first flight up to ServerHelloDone, which
/// is in clear: the Certificate, ServerKeyExchange and
/// CertificateRequest messages. Bytes after that are not read.
///
/// `input` is what an attacker controls: every length is checked against
/// [`MAX_RECORD_LEN`], [`MAX_SERVER_HELLO_LEN`],
/// [`MAX_CERTIFICATES_LEN`] and [`MAX_ANSWER_RECORDS`] before anything is
/// allocated, and nothing panics. An error after a ServerHello does not
/// lose it: it is kept in [`Tls12Flight::error`].
pub fn read_server_answer(input: &mut impl Read) -> Result<ServerAnswer, AnswerError> {
    let mut reader = Handshakes {
        input,
        pending: Vec::new(),
        records: 0,
    };
    let body = match reader.next(MAX_SERVER_HELLO_LEN)? {
        Message::Alert { level, description } => {
            return Ok(ServerAnswer::Alert { level, description });
        }
        Message::Handshake(2, body) => body,
        Message::Handshake(..) => {
            return Err(AnswerError::Malformed(
                "the first handshake message is not a ServerHello",
            ));
        }
    };
    let hello = parse_server_hello(&body)?;
    let mut flight = Tls12Flight::default();
    if hello.version <= TLS12
        && !hello.hello_retry_request
        && let Err(e) = read_tls12_flight(&mut reader, &mut flight)
    {
        flight.error = Some(e.to_string());
    }
    Ok(ServerAnswer::Hello { hello, flight })
}

/// Reads a TLS 1.2 flight after its ServerHello, up to ServerHelloDone.
fn read_tls12_flight(
    reader: &mut Handshakes<'_, impl Read>,
    flight: &mut Tls12Flight,
) -> Result<(), AnswerError> {
    loop {
        let (kind, body) = match reader.next(MAX_CERTIFICATES_LEN)? {
            Message::Handshake(kind, body) => (kind, body),
            Message::Alert { .. } => {
                return Err(AnswerError::Malformed("an alert after the ServerHello"));
            }
        };
        match kind {
            11 => flight.certificates = parse_certificates(&body)?,
            12 => {
                // An ECDHE ServerKeyExchange starts with curve_type 3
                // (named_curve) and the group.
                if let [3, hi, lo, ..] = body[..] {
                    flight.ecdhe_group = Some(u16::from_be_bytes([hi, lo]));
                }
            }
            13 => flight.certificate_request = true,
            14 => return Ok(()),
            // certificate_status and anything else a server may add.
            _ => {}
        }
    }
}

fn parse_certificates(body: &[u8]) -> Result<Vec<Vec<u8>>, AnswerError> {
    let mut r = Bytes(body);
    let len = r.u24()?;
    let mut list = Bytes(r.take(len)?);
    r.end()?;
    let mut certs = Vec::new();
    while !list.0.is_empty() {
        if certs.len() == MAX_CHAIN_LEN {
            return Err(AnswerError::TooLarge {
                what: "a certificate chain, in certificates,",
                len: MAX_CHAIN_LEN + 1,
                max: MAX_CHAIN_LEN,
            });
        }
        let len = list.u24()?;
        certs.push(list.take(len)?.to_vec());
    }
    Ok(certs)
}

/// One step of a server's flight.
enum Message {
    Alert { level: u8, description: u8 },
    Handshake(u8, Vec<u8>),
}

/// Handshake messages out of TLS records, with bounds.
struct Handshakes<'r, R> {
    input: &'r mut R,
    /// Handshake bytes read but not yet returned.
    pending: Vec<u8>,
    records: usize,
}

impl<R: Read> Handshakes<'_, R> {
    /// The next handshake message (of at most `max` bytes) or an alert.
    fn next(&mut self, max: usize) -> Result<Message, AnswerError> {
        loop {
            if let [kind, a, b, c, ..] = self.pending[..] {
                let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                if len > max {
                    return Err(AnswerError::TooLarge {
                        what: "a handshake message",
                        len,
                        max,
                    });
                }
                if self.pending.len() >= 4 + len {
                    let body = self.pending[4..4 + len].to_vec();
                    self.pending.drain(..4 + len);
                    return Ok(Message::Handshake(kind, body));
                }
            }
            let (content_type, payload) = self.record()?;
            match content_type {
                // change_cipher_spec: a TLS 1.3 server may send one early.
                20 => {}
                21 => {
                    if !self.pending.is_empty() {
                        return Err(AnswerError::Malformed(
                            "an alert inside a handshake message",
                        ));
                    }
                    let [level, description, ..] = payload[..] else {
                        return Err(AnswerError::Malformed(
                            "an alert record shorter than 2 bytes",
                        ));
                    };
                    if payload.len() % 2 != 0 {
                        return Err(AnswerError::Malformed("an alert record of odd length"));
                    }
                    return Ok(Message::Alert { level, description });
                }
                22 => self.pending.extend_from_slice(&payload),
                _ => {
                    return Err(AnswerError::Malformed(
                        "application data before the handshake ended",
                    ));
                }
            }
        }
    }

    /// The next record: its content type and payload.
    fn record(&mut self) -> Result<(u8, Vec<u8>), AnswerError> {
        if self.records == MAX_ANSWER_RECORDS {
            return Err(AnswerError::TooLarge {
                what: "a first flight, in records,",
                len: MAX_ANSWER_RECORDS + 1,
                max: MAX_ANSWER_RECORDS,
            });
        }
        let first = self.records == 0;
        self.records += 1;
        let mut header = [0u8; 5];
        let got = read_full(self.input, &mut header)?;
        if first && got > 0 && !looks_like_tls(&header[..got]) {
            return Err(AnswerError::NotTls {
                first_bytes: header[..got].to_vec(),
            });
        }
        if got < header.len() {
            return Err(AnswerError::Closed);
        }
        let [content_type, major, minor, hi, lo] = header;
        if major != 3 || minor > 4 || !matches!(content_type, 20..=23) {
            return Err(AnswerError::Malformed("a record header that is not TLS"));
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_RECORD_LEN {
            return Err(AnswerError::TooLarge {
                what: "a record",
                len,
                max: MAX_RECORD_LEN,
            });
        }
        if len == 0 {
            return Err(AnswerError::Malformed("an empty record"));
        }
        let mut payload = vec![0u8; len];
        if read_full(self.input, &mut payload)? < len {
            return Err(AnswerError::Closed);
        }
        Ok((content_type, payload))
    }
}

/// The name of a TLS alert description (`handshake_failure`…), or
/// `alert <n>` for one moat does not name.
pub fn alert_name(description: u8) -> String {
    let name = match description {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        47 => "illegal_parameter",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        116 => "certificate_required",
        120 => "no_application_protocol",
        other => return format!("alert {other}"),
    };
    name.to_owned()
}

const TLS10: u16 = 0x0301;
const TLS11: u16 = 0x0302;
const TLS12: u16 = 0x0303;
const TLS13: u16 = 0x0304;

/// Versions tried, newest first.
const VERSIONS: [u16; 4] = [TLS13, TLS12, TLS11, TLS10];

fn version_name(version: u16) -> &'static str {
    match version {
        TLS10 => "TLSv1.0",
        TLS11 => "TLSv1.1",
        TLS12 => "TLSv1.2",
        TLS13 => "TLSv1.3",
        0x0300 => "SSLv3",
        _ => "an unknown version",
    }
}

/// The random of a HelloRetryRequest: SHA-256 of "HelloRetryRequest".
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kx {
    /// TLS 1.3: the suite does not name the key exchange.
    Tls13,
    Ecdhe,
    Dhe,
    /// RSA key transport: no forward secrecy.
    Rsa,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    Aead,
    Cbc,
    TripleDes,
    Rc4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mac {
    Aead,
    Md5,
    Sha1,
    Sha2,
}

#[derive(Debug)]
struct Suite {
    code: u16,
    name: &'static str,
    kx: Kx,
    cipher: Cipher,
    mac: Mac,
}

impl Suite {
    /// TLS 1.3 suites only there; AEAD and SHA-2 suites from TLS 1.2 on.
    fn usable_in(&self, version: u16) -> bool {
        match self.kx {
            Kx::Tls13 => version == TLS13,
            _ if version == TLS12 => true,
            _ => version < TLS12 && self.cipher != Cipher::Aead && self.mac != Mac::Sha2,
        }
    }

    fn weaknesses(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.kx == Kx::Rsa {
            out.push("no forward secrecy");
        }
        match self.cipher {
            Cipher::Aead => {}
            Cipher::Cbc => out.push("CBC mode"),
            Cipher::TripleDes => out.extend(["3DES", "CBC mode"]),
            Cipher::Rc4 => out.push("RC4"),
        }
        match self.mac {
            Mac::Aead | Mac::Sha2 => {}
            Mac::Sha1 => out.push("SHA-1 MAC"),
            Mac::Md5 => out.push("MD5 MAC"),
        }
        out.into_iter().map(str::to_owned).collect()
    }

    fn report(&self, version: u16) -> ProbeSuite {
        let weaknesses = self.weaknesses();
        ProbeSuite {
            name: self.name.to_owned(),
            version: version_name(version).to_owned(),
            weak: !weaknesses.is_empty(),
            weaknesses,
        }
    }
}

const fn suite(code: u16, name: &'static str, kx: Kx, cipher: Cipher, mac: Mac) -> Suite {
    Suite {
        code,
        name,
        kx,
        cipher,
        mac,
    }
}

/// The suites tried: what Go's crypto/tls and OpenSSL may serve, and the
/// broken ones an old configuration may still allow.
const SUITES: &[Suite] = {
    use Cipher::{Aead as Ae, Cbc, Rc4, TripleDes};
    use Kx::{Dhe, Ecdhe, Rsa, Tls13};
    use Mac::{Aead, Md5, Sha1, Sha2};
    &[
        suite(0x1301, "TLS_AES_128_GCM_SHA256", Tls13, Ae, Aead),
        suite(0x1302, "TLS_AES_256_GCM_SHA384", Tls13, Ae, Aead),
        suite(0x1303, "TLS_CHACHA20_POLY1305_SHA256", Tls13, Ae, Aead),
        suite(0x1304, "TLS_AES_128_CCM_SHA256", Tls13, Ae, Aead),
        suite(0x1305, "TLS_AES_128_CCM_8_SHA256", Tls13, Ae, Aead),
        suite(
            0xc02b,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Ecdhe,
            Ae,
            Aead,
        ),
        suite(
            0xc02c,
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            Ecdhe,
            Ae,
            Aead,
        ),
        suite(
            0xcca9,
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Ecdhe,
            Ae,
            Aead,
        ),
        suite(
            0xc02f,
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            Ecdhe,
            Ae,
            Aead,
        ),
        suite(
            0xc030,
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            Ecdhe,
            Ae,
            Aead,
        ),
        suite(
            0xcca8,
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Ecdhe,
            Ae,
            Aead,
        ),
        suite(
            0xc009,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            Ecdhe,
            Cbc,
            Sha1,
        ),
        suite(
            0xc00a,
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
            Ecdhe,
            Cbc,
            Sha1,
        ),
        suite(
            0xc023,
            "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
            Ecdhe,
            Cbc,
            Sha2,
        ),
        suite(
            0xc024,
            "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
            Ecdhe,
            Cbc,
            Sha2,
        ),
        suite(
            0xc013,
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            Ecdhe,
            Cbc,
            Sha1,
        ),
        suite(
            0xc014,
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
            Ecdhe,
            Cbc,
            Sha1,
        ),
        suite(
            0xc027,
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            Ecdhe,
            Cbc,
            Sha2,
        ),
        suite(
            0xc028,
            "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
            Ecdhe,
            Cbc,
            Sha2,
        ),
        suite(0x009e, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", Dhe, Ae, Aead),
        suite(0x009f, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", Dhe, Ae, Aead),
        suite(
            0xccaa,
            "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Dhe,
            Ae,
            Aead,
        ),
        suite(0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", Dhe, Cbc, Sha1),
        suite(0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", Dhe, Cbc, Sha1),
        suite(
            0x0067,
            "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
            Dhe,
            Cbc,
            Sha2,
        ),
        suite(
            0x006b,
            "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
            Dhe,
            Cbc,
            Sha2,
        ),
        suite(0x009c, "TLS_RSA_WITH_AES_128_GCM_SHA256", Rsa, Ae, Aead),
        suite(0x009d, "TLS_RSA_WITH_AES_256_GCM_SHA384", Rsa, Ae, Aead),
        suite(0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA", Rsa, Cbc, Sha1),
        suite(0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA", Rsa, Cbc, Sha1),
        suite(0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256", Rsa, Cbc, Sha2),
        suite(0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256", Rsa, Cbc, Sha2),
        suite(
            0xc008,
            "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
            Ecdhe,
            TripleDes,
            Sha1,
        ),
        suite(
            0xc012,
            "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
            Ecdhe,
            TripleDes,
            Sha1,
        ),
        suite(
            0x0016,
            "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
            Dhe,
            TripleDes,
            Sha1,
        ),
        suite(
            0x000a,
            "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
            Rsa,
            TripleDes,
            Sha1,
        ),
        suite(0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", Ecdhe, Rc4, Sha1),
        suite(0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA", Ecdhe, Rc4, Sha1),
        suite(0x0005, "TLS_RSA_WITH_RC4_128_SHA", Rsa, Rc4, Sha1),
        suite(0x0004, "TLS_RSA_WITH_RC4_128_MD5", Rsa, Rc4, Md5),
    ]
};

#[derive(Debug)]
struct Group {
    code: u16,
    /// As rustls prints it.
    name: &'static str,
    post_quantum: bool,
    /// Usable by TLS 1.2 ECDHE suites.
    ecdhe: bool,
}

const fn group(code: u16, name: &'static str, post_quantum: bool, ecdhe: bool) -> Group {
    Group {
        code,
        name,
        post_quantum,
        ecdhe,
    }
}

/// The groups tried, post-quantum first.
const GROUPS: &[Group] = &[
    group(0x11ec, "X25519MLKEM768", true, false),
    group(0x11eb, "secp256r1MLKEM768", true, false),
    group(0x11ed, "secp384r1MLKEM1024", true, false),
    group(0x0200, "MLKEM512", true, false),
    group(0x0201, "MLKEM768", true, false),
    group(0x0202, "MLKEM1024", true, false),
    group(0x001d, "X25519", false, true),
    group(0x001e, "X448", false, true),
    group(0x0017, "secp256r1", false, true),
    group(0x0018, "secp384r1", false, true),
    group(0x0019, "secp521r1", false, true),
    group(0x0100, "FFDHE2048", false, false),
    group(0x0101, "FFDHE3072", false, false),
    group(0x0102, "FFDHE4096", false, false),
];

/// The TLS group of an ECDSA leaf's curve.
fn ecdsa_group(der: &[u8]) -> Option<u16> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm != x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        return None;
    }
    let curve = spki.algorithm.parameters.as_ref()?.as_oid().ok()?;
    match curve.to_id_string().as_str() {
        "1.2.840.10045.3.1.7" => Some(0x0017),
        "1.3.132.0.34" => Some(0x0018),
        "1.3.132.0.35" => Some(0x0019),
        _ => None,
    }
}

fn group_name(code: u16) -> String {
    GROUPS
        .iter()
        .find(|g| g.code == code)
        .map_or_else(|| format!("group 0x{code:04x}"), |g| g.name.to_owned())
}

fn suite_name(code: u16) -> String {
    SUITES
        .iter()
        .find(|s| s.code == code)
        .map_or_else(|| format!("suite 0x{code:04x}"), |s| s.name.to_owned())
}

/// Signature schemes offered: every common one, SHA-1 included, so that
/// an old server can still answer.
const SIGNATURE_SCHEMES: &[u16] = &[
    0x0403, 0x0503, 0x0603, // ecdsa_secp{256,384,521}r1_sha{256,384,512}
    0x0807, 0x0808, // ed25519, ed448
    0x0804, 0x0805, 0x0806, // rsa_pss_rsae_sha{256,384,512}
    0x0809, 0x080a, 0x080b, // rsa_pss_pss_sha{256,384,512}
    0x0401, 0x0501, 0x0601, // rsa_pkcs1_sha{256,384,512}
    0x0203, 0x0201, // ecdsa_sha1, rsa_pkcs1_sha1
];

/// One ClientHello's offer.
#[derive(Debug, Clone)]
struct Offer {
    /// The highest version offered (TLS 1.3 is offered alone, through
    /// `supported_versions`; earlier ones through `legacy_version`).
    version: u16,
    suites: Vec<u16>,
    groups: Vec<u16>,
}

impl Offer {
    /// Every suite usable in `version` and every group that fits it.
    fn version(version: u16) -> Self {
        Self {
            version,
            suites: SUITES
                .iter()
                .filter(|s| s.usable_in(version))
                .map(|s| s.code)
                .collect(),
            groups: GROUPS
                .iter()
                .filter(|g| version == TLS13 || g.ecdhe)
                .map(|g| g.code)
                .collect(),
        }
    }
}

/// Builds a ClientHello record. A TLS 1.3 offer carries an empty
/// `key_share`: the server must answer with a HelloRetryRequest naming
/// its group, and nothing is ever computed.
fn client_hello(
    offer: &Offer,
    sni: Option<&str>,
    random: &[u8; 32],
    session_id: &[u8; 32],
) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(name) = sni {
        extension(&mut exts, 0x0000, |b| {
            with_u16_len(b, |b| {
                b.push(0); // host_name
                with_u16_len(b, |b| b.extend_from_slice(name.as_bytes()));
            });
        });
    }
    extension(&mut exts, 0x000a, |b| {
        with_u16_len(b, |b| offer.groups.iter().for_each(|g| put_u16(b, *g)));
    });
    extension(&mut exts, 0x000b, |b| b.extend_from_slice(&[1, 0])); // uncompressed points
    extension(&mut exts, 0x000d, |b| {
        with_u16_len(b, |b| SIGNATURE_SCHEMES.iter().for_each(|s| put_u16(b, *s)));
    });
    extension(&mut exts, 0x0010, |b| {
        // ALPN: a Swarm manager is a gRPC server.
        with_u16_len(b, |b| {
            for proto in [&b"h2"[..], b"http/1.1"] {
                b.push(u8::try_from(proto.len()).unwrap_or(0));
                b.extend_from_slice(proto);
            }
        });
    });
    extension(&mut exts, 0x0017, |_| {}); // extended_master_secret
    extension(&mut exts, 0xff01, |b| b.push(0)); // renegotiation_info
    if offer.version == TLS13 {
        extension(&mut exts, 0x002b, |b| b.extend_from_slice(&[2, 0x03, 0x04]));
        extension(&mut exts, 0x002d, |b| b.extend_from_slice(&[1, 1])); // psk_dhe_ke
        extension(&mut exts, 0x0033, |b| put_u16(b, 0)); // no key shares
    }

    let mut body = Vec::with_capacity(512);
    put_u16(&mut body, offer.version.min(TLS12));
    body.extend_from_slice(random);
    body.push(32);
    body.extend_from_slice(session_id);
    with_u16_len(&mut body, |b| {
        offer.suites.iter().for_each(|s| put_u16(b, *s))
    });
    body.extend_from_slice(&[1, 0]); // compression: null
    with_u16_len(&mut body, |b| b.extend_from_slice(&exts));

    let mut record = Vec::with_capacity(body.len() + 9);
    record.extend_from_slice(&[22, 0x03, 0x01]);
    with_u16_len(&mut record, |r| {
        r.push(1); // client_hello
        let len = u32::try_from(body.len()).unwrap_or(0).to_be_bytes();
        r.extend_from_slice(&len[1..]);
        r.extend_from_slice(&body);
    });
    record
}

fn put_u16(buf: &mut Vec<u8>, value: u16) {
    buf.extend_from_slice(&value.to_be_bytes());
}

/// Writes `fill`'s bytes after a two-byte length. Everything moat builds
/// is far below 64 KiB.
fn with_u16_len(buf: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    fill(buf);
    let len = u16::try_from(buf.len() - at - 2).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

fn extension(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    put_u16(buf, kind);
    with_u16_len(buf, fill);
}

/// Reads until `buf` is full or the input ends; returns the count read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether a prefix of at most 5 bytes can start a TLS record.
fn looks_like_tls(prefix: &[u8]) -> bool {
    match *prefix {
        [] => true,
        [t, ..] if !(20..=23).contains(&t) => false,
        [_, major, ..] if major != 3 => false,
        [_, _, minor, ..] if minor > 4 => false,
        _ => true,
    }
}

fn parse_server_hello(body: &[u8]) -> Result<ServerHello, AnswerError> {
    let mut r = Bytes(body);
    let legacy_version = r.u16()?;
    let hello_retry_request = r.take(32)? == HELLO_RETRY_RANDOM;
    let session_id_len = r.u8()?;
    if session_id_len > 32 {
        return Err(AnswerError::Malformed("a session id longer than 32 bytes"));
    }
    r.take(usize::from(session_id_len))?;
    let cipher_suite = r.u16()?;
    if r.u8()? != 0 {
        return Err(AnswerError::Malformed(
            "a compression method that was not offered",
        ));
    }
    let mut extensions = Vec::new();
    let mut supported_version = None;
    let mut key_share_group = None;
    if !r.0.is_empty() {
        let len = usize::from(r.u16()?);
        let mut exts = Bytes(r.take(len)?);
        r.end()?;
        while !exts.0.is_empty() {
            let kind = exts.u16()?;
            let len = usize::from(exts.u16()?);
            let mut data = Bytes(exts.take(len)?);
            if extensions.contains(&kind) {
                return Err(AnswerError::Malformed(
                    "an extension twice in the ServerHello",
                ));
            }
            extensions.push(kind);
            match kind {
                0x002b => {
                    supported_version = Some(data.u16()?);
                    data.end()?;
                }
                0x0033 => {
                    key_share_group = Some(data.u16()?);
                    if !hello_retry_request {
                        let len = usize::from(data.u16()?);
                        data.take(len)?;
                    }
                    data.end()?;
                }
                _ => {}
            }
        }
    }
    Ok(ServerHello {
        legacy_version,
        version: supported_version.unwrap_or(legacy_version),
        cipher_suite,
        hello_retry_request,
        key_share_group,
        extensions,
    })
}

/// A cursor over a ServerHello's bytes.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AnswerError> {
        if n > self.0.len() {
            return Err(AnswerError::Malformed("a handshake field cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, AnswerError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AnswerError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, AnswerError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    fn end(&self) -> Result<(), AnswerError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AnswerError::Malformed("extra bytes in a handshake field"))
        }
    }
}

fn preview(bytes: &[u8]) -> String {
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let text: String = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    format!("{} ({text:?})", hex.join(" "))
}

fn resolve(address: &str) -> Result<SocketAddr, ProbeError> {
    let bad = |reason: String| ProbeError::Address {
        address: address.to_owned(),
        reason,
    };
    let mut addrs = address.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("it resolves to no address".to_owned()))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Why one offer could not be judged.
enum Untested {
    OutOfTime,
    Connect(io::Error),
    Answer(AnswerError),
}

/// The state of one probe: where, until when, and what went unsaid.
struct Prober {
    address: String,
    peer: SocketAddr,
    timeout: Duration,
    deadline: Instant,
    sni: Option<String>,
    rng: SystemRandom,
    /// Why → what: offers that got no usable answer.
    untested: BTreeMap<String, Vec<String>>,
    /// Alert → offers: refusals by an alert other than the usual ones.
    odd_alerts: BTreeMap<String, Vec<String>>,
    notes: Vec<String>,
}

impl Prober {
    /// Sends one ClientHello on a new connection and reads the answer.
    /// Only randomness failing is an error; the rest is an outcome.
    fn exchange(&self, offer: &Offer) -> Result<Result<ServerAnswer, Untested>, ProbeError> {
        let mut random = [0u8; 32];
        let mut session_id = [0u8; 32];
        self.rng.fill(&mut random).map_err(|_| ProbeError::Random)?;
        self.rng
            .fill(&mut session_id)
            .map_err(|_| ProbeError::Random)?;
        let hello = client_hello(offer, self.sni.as_deref(), &random, &session_id);
        Ok(self.send(&hello))
    }

    fn send(&self, hello: &[u8]) -> Result<ServerAnswer, Untested> {
        let (stream, deadline) = self.connect()?;
        let mut io = DeadlineIo {
            stream: &stream,
            deadline,
        };
        let answer = io
            .write_all(hello)
            .map_err(AnswerError::Io)
            .and_then(|()| read_server_answer(&mut io));
        let _ = stream.shutdown(Shutdown::Both);
        answer.map_err(Untested::Answer)
    }

    fn connect(&self) -> Result<(TcpStream, Instant), Untested> {
        let now = Instant::now();
        let left = self.deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Err(Untested::OutOfTime);
        }
        let limit = self.timeout.min(left);
        let stream = TcpStream::connect_timeout(&self.peer, limit).map_err(Untested::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok((stream, now + limit))
    }

    /// The first connection's failures are the probe's.
    fn first_contact(&self, answer: &Result<ServerAnswer, Untested>) -> Result<(), ProbeError> {
        match answer {
            Err(Untested::Connect(e)) => Err(ProbeError::Connect {
                address: self.address.clone(),
                peer: self.peer,
                source: io::Error::new(e.kind(), e.to_string()),
            }),
            Err(Untested::Answer(AnswerError::NotTls { first_bytes })) => Err(ProbeError::NotTls {
                address: self.address.clone(),
                preview: preview(first_bytes),
            }),
            _ => Ok(()),
        }
    }

    /// The ServerHello if there is one; a refusal or a failure is
    /// recorded for the notes.
    fn judge(
        &mut self,
        what: &str,
        answer: Result<ServerAnswer, Untested>,
    ) -> Option<(ServerHello, Tls12Flight)> {
        let why = match answer {
            Ok(ServerAnswer::Hello { hello, flight }) => return Some((hello, flight)),
            Ok(ServerAnswer::Alert { description, .. }) => {
                // The refusals RFC 8446 and 5246 ask for.
                if !matches!(description, 40 | 70 | 71) {
                    self.odd_alerts
                        .entry(alert_name(description))
                        .or_default()
                        .push(what.to_owned());
                }
                return None;
            }
            Err(Untested::Answer(AnswerError::Closed)) => return None,
            Err(Untested::Answer(AnswerError::Io(e)))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                        | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return None;
            }
            Err(Untested::Answer(AnswerError::Io(e)))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                format!("no answer within {:?}", self.timeout)
            }
            Err(Untested::OutOfTime) => "the probe's time budget ran out".to_owned(),
            Err(Untested::Connect(e)) => format!("cannot connect: {e}"),
            Err(Untested::Answer(e)) => e.to_string(),
        };
        self.untested.entry(why).or_default().push(what.to_owned());
        None
    }

    /// TLS 1.2 groups: one group offered with every ECDHE suite, the
    /// ServerKeyExchange naming the group used. An ECDSA certificate's
    /// curve must be among the groups offered (RFC 8422 §5.1; OpenSSL
    /// holds to it), so a group refused alone is offered again before that
    /// curve.
    fn tls12_groups(
        &mut self,
        accepted: &[ProbeSuite],
        cert_group: Option<u16>,
    ) -> Result<Vec<&'static Group>, ProbeError> {
        let ecdhe: Vec<u16> = SUITES
            .iter()
            .filter(|s| s.kx == Kx::Ecdhe && s.usable_in(TLS12))
            .map(|s| s.code)
            .collect();
        let accepted_ecdhe = accepted
            .iter()
            .any(|s| s.version == "TLSv1.2" && s.name.contains("_ECDHE_"));
        if !accepted_ecdhe {
            self.notes.push(
                "no ECDHE suite accepted under TLSv1.2: its groups were not tried".to_owned(),
            );
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut outranked: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for group in GROUPS.iter().filter(|g| g.ecdhe) {
            let what = format!("TLSv1.2 group {}", group.name);
            let mut offers = vec![vec![group.code]];
            if let Some(cert) = cert_group.filter(|&c| c != group.code) {
                offers.push(vec![group.code, cert]);
            }
            for groups in offers {
                let offer = Offer {
                    suites: ecdhe.clone(),
                    groups: groups.clone(),
                    ..Offer::version(TLS12)
                };
                let answer = self.exchange(&offer)?;
                let Some((hello, flight)) = self.judge(&what, answer) else {
                    continue;
                };
                if hello.version != TLS12 || !ecdhe.contains(&hello.cipher_suite) {
                    continue;
                }
                match flight.ecdhe_group {
                    Some(used) if used == group.code => out.push(group),
                    Some(used) if groups.contains(&used) => outranked
                        .entry(group_name(used))
                        .or_default()
                        .push(group.name),
                    Some(used) => self.notes.push(format!(
                        "offered {what}, the server used group 0x{used:04x} (a protocol violation)"
                    )),
                    None => self.notes.push(format!(
                        "{what}: not determined, no ECDHE ServerKeyExchange was read"
                    )),
                }
                break;
            }
        }
        for (used, names) in outranked {
            self.notes.push(format!(
                "TLSv1.2 groups {}: refused alone, and offered with {used} (the certificate's \
                 curve, which a TLS 1.2 client must offer) the server chose {used}: refused, or \
                 ranked below it",
                names.join(", ")
            ));
        }
        Ok(out)
    }

    /// TLS 1.3 groups: one group offered, no key share; a server that
    /// supports it names it in a HelloRetryRequest.
    fn tls13_groups(&mut self) -> Result<Vec<&'static Group>, ProbeError> {
        let mut out = Vec::new();
        for group in GROUPS {
            let what = format!("TLSv1.3 group {}", group.name);
            let offer = Offer {
                groups: vec![group.code],
                ..Offer::version(TLS13)
            };
            let answer = self.exchange(&offer)?;
            let Some((hello, _)) = self.judge(&what, answer) else {
                continue;
            };
            if hello.version != TLS13 {
                continue;
            }
            match hello.key_share_group {
                Some(code) if code == group.code => out.push(group),
                Some(code) => self.notes.push(format!(
                    "offered only {what}, the server chose group 0x{code:04x} (a protocol violation)"
                )),
                None => self
                    .notes
                    .push(format!("the server answered {what} without naming a group")),
            }
        }
        Ok(out)
    }

    fn finish_notes(&mut self) -> Vec<String> {
        let mut notes = std::mem::take(&mut self.notes);
        for (why, what) in std::mem::take(&mut self.untested) {
            notes.push(format!("not tested ({why}): {}", what.join(", ")));
        }
        for (alert, what) in std::mem::take(&mut self.odd_alerts) {
            notes.push(format!(
                "refused with alert {alert} (not handshake_failure or protocol_version), \
                 counted as not accepted: {}",
                what.join(", ")
            ));
        }
        notes
    }

    /// One complete handshake by rustls, accepting any chain.
    fn full_handshake(&self, server_name: Option<ServerName<'static>>) -> FullHandshake {
        let mut out = FullHandshake::default();
        let server_name = server_name
            .filter(|n| matches!(n, ServerName::DnsName(_)))
            .unwrap_or_else(|| ServerName::IpAddress(self.peer.ip().into()));
        let inspector = Arc::new(danger::InspectAnyServerCert::new());
        let asked = Arc::new(danger::NoClientCert::default());
        let result =
            danger::inspection_client(inspector.clone(), asked.clone(), self.sni.is_some())
                .and_then(|config| {
                    rustls::ClientConnection::new(config, server_name)
                        .map_err(|e| format!("cannot start the handshake: {e}"))
                })
                .and_then(|mut conn| {
                    let (stream, deadline) = self.connect().map_err(|e| match e {
                        Untested::OutOfTime => "the probe's time budget ran out".to_owned(),
                        Untested::Connect(e) => format!("cannot connect: {e}"),
                        Untested::Answer(e) => e.to_string(),
                    })?;
                    let mut io = DeadlineIo {
                        stream: &stream,
                        deadline,
                    };
                    while conn.is_handshaking() {
                        conn.complete_io(&mut io).map_err(|e| e.to_string())?;
                    }
                    conn.send_close_notify();
                    let _ = conn.complete_io(&mut io);
                    let _ = stream.shutdown(Shutdown::Both);
                    Ok(conn)
                });
        out.chain = inspector.chain();
        out.client_cert_requested = asked.was_asked();
        match result {
            Ok(conn) => {
                out.negotiated = Some(ProbeNegotiated {
                    version: conn
                        .protocol_version()
                        .map_or_else(String::new, |v| version_name(u16::from(v)).to_owned()),
                    cipher_suite: conn
                        .negotiated_cipher_suite()
                        .map_or_else(String::new, |s| suite_name(u16::from(s.suite()))),
                    key_exchange_group: conn
                        .negotiated_key_exchange_group()
                        .map(|g| group_name(u16::from(g.name()))),
                });
            }
            Err(e) => out.error = Some(e),
        }
        out
    }
}

#[derive(Default)]
struct FullHandshake {
    chain: Vec<CertificateDer<'static>>,
    negotiated: Option<ProbeNegotiated>,
    client_cert_requested: bool,
    /// Why the handshake did not complete.
    error: Option<String>,
    notes: Vec<String>,
}

/// A socket whose reads and writes all end by one deadline.
struct DeadlineIo<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl DeadlineIo<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            Ok(left)
        }
    }
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        let mut stream = self.stream;
        stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One presented certificate as the report shows it (the same facts and
/// wording as `moat cert inspect`), with its PEM.
fn describe_cert(index: usize, der: &CertificateDer<'_>) -> ProbeCert {
    crate::certs::probe_cert(index, der.as_ref())
}

/// The door to what a normal client never does: accept any server
/// certificate. Only the probe's single inspection handshake uses it.
mod danger {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use rustls::client::ResolvesClientCert;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

    /// A client config for inspection only: TLS 1.3 (moat's rustls is
    /// built without TLS 1.2, and this probe does not change that), the
    /// aws-lc-rs provider (passed explicitly: with two providers compiled
    /// in, the default builder panics), any chain accepted and recorded,
    /// no client certificate.
    pub(super) fn inspection_client(
        inspector: Arc<InspectAnyServerCert>,
        client_cert: Arc<NoClientCert>,
        sni: bool,
    ) -> Result<Arc<ClientConfig>, String> {
        let mut config = ClientConfig::builder_with_provider(inspector.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(inspector)
            .with_client_cert_resolver(client_cert);
        config.enable_sni = sni;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Records the server's chain and accepts it, whatever it is: an
    /// inspection, not a trust decision. The handshake signature is still
    /// checked against the leaf's key.
    #[derive(Debug)]
    pub(super) struct InspectAnyServerCert {
        provider: Arc<CryptoProvider>,
        chain: Mutex<Vec<CertificateDer<'static>>>,
    }

    impl InspectAnyServerCert {
        pub(super) fn new() -> Self {
            Self {
                provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
                chain: Mutex::new(Vec::new()),
            }
        }

        /// The chain seen, leaf first (empty before the server sent one).
        pub(super) fn chain(&self) -> Vec<CertificateDer<'static>> {
            self.chain
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl ServerCertVerifier for InspectAnyServerCert {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let mut chain = self.chain.lock().unwrap_or_else(PoisonError::into_inner);
            *chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// Notes that the server asked for a client certificate, and sends
    /// none.
    #[derive(Debug, Default)]
    pub(super) struct NoClientCert {
        asked: AtomicBool,
    }

    impl NoClientCert {
        pub(super) fn was_asked(&self) -> bool {
            self.asked.load(Ordering::Relaxed)
        }
    }

    impl ResolvesClientCert for NoClientCert {
        fn resolve(
            &self,
            _root_hint_subjects: &[&[u8]],
            _sigschemes: &[SignatureScheme],
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            self.asked.store(true, Ordering::Relaxed);
            None
        }

        // True, so that rustls keeps what it needs to answer a
        // certificate request (with no certificate).
        fn has_certs(&self) -> bool {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![content_type, 3, 3];
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        out.extend_from_slice(body);
        out
    }

    fn server_hello(random: [u8; 32], suite: u16, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&random);
        body.push(32);
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&suite.to_be_bytes());
        body.push(0);
        let mut ext_bytes = Vec::new();
        for (kind, data) in exts {
            ext_bytes.extend_from_slice(&kind.to_be_bytes());
            ext_bytes.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            ext_bytes.extend_from_slice(data);
        }
        body.extend_from_slice(&u16::try_from(ext_bytes.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext_bytes);
        message(2, &body)
    }

    fn hrr(group: u16) -> Vec<u8> {
        record(
            22,
            &server_hello(
                HELLO_RETRY_RANDOM,
                0x1301,
                &[(0x002b, vec![3, 4]), (0x0033, group.to_be_bytes().to_vec())],
            ),
        )
    }

    /// A TLS 1.2 flight in one record: ServerHello, Certificate (two
    /// certificates), ECDHE ServerKeyExchange on X25519,
    /// CertificateRequest, ServerHelloDone.
    fn tls12_flight() -> Vec<u8> {
        let mut payload = server_hello([1; 32], 0xc009, &[(0xff01, vec![0])]);
        let certs: Vec<u8> = [&b"leaf"[..], b"ca"]
            .iter()
            .flat_map(|c| {
                let mut e = u32::try_from(c.len()).unwrap().to_be_bytes()[1..].to_vec();
                e.extend_from_slice(c);
                e
            })
            .collect();
        let mut cert_body = u32::try_from(certs.len()).unwrap().to_be_bytes()[1..].to_vec();
        cert_body.extend_from_slice(&certs);
        payload.extend(message(11, &cert_body));
        payload.extend(message(12, &[3, 0x00, 0x1d, 32]));
        payload.extend(message(13, &[1, 64, 0, 0]));
        payload.extend(message(14, &[]));
        record(22, &payload)
    }

    #[test]
    fn reads_a_hello_retry_request() {
        let ServerAnswer::Hello { hello, flight } =
            read_server_answer(&mut &hrr(0x11ec)[..]).unwrap()
        else {
            panic!("not a hello");
        };
        assert!(hello.hello_retry_request);
        assert_eq!(hello.version, TLS13);
        assert_eq!(hello.legacy_version, TLS12);
        assert_eq!(hello.cipher_suite, 0x1301);
        assert_eq!(hello.key_share_group, Some(0x11ec));
        assert_eq!(hello.extensions, [0x002b, 0x0033]);
        assert_eq!(flight, Tls12Flight::default());
    }

    #[test]
    fn reads_a_tls12_flight_whole_and_in_fragments() {
        let bytes = tls12_flight();
        let expected = read_server_answer(&mut &bytes[..]).unwrap();
        let ServerAnswer::Hello { hello, flight } = &expected else {
            panic!("not a hello");
        };
        assert_eq!((hello.version, hello.cipher_suite), (TLS12, 0xc009));
        assert!(!hello.hello_retry_request);
        assert_eq!(flight.certificates, [b"leaf".to_vec(), b"ca".to_vec()]);
        assert_eq!(flight.ecdhe_group, Some(0x001d));
        assert!(flight.certificate_request);
        assert_eq!(flight.error, None);

        // The same handshake bytes cut into 7-byte records, with a change
        // cipher spec first.
        let payload = &bytes[5..];
        let mut fragmented = record(20, &[1]);
        for chunk in payload.chunks(7) {
            fragmented.extend(record(22, chunk));
        }
        assert!(payload.len().div_ceil(7) < MAX_ANSWER_RECORDS);
        assert_eq!(read_server_answer(&mut &fragmented[..]).unwrap(), expected);
    }

    #[test]
    fn a_broken_flight_after_the_hello_keeps_the_hello() {
        // The ServerHello in its own record, then a Certificate message
        // cut short by the end of the connection.
        let mut bytes = record(22, &server_hello([1; 32], 0xc009, &[]));
        bytes.extend(record(22, &message(11, &[0, 0, 9, 0, 0, 6])));
        let ServerAnswer::Hello { hello, flight } = read_server_answer(&mut &bytes[..]).unwrap()
        else {
            panic!("not a hello");
        };
        assert_eq!(hello.cipher_suite, 0xc009);
        assert!(flight.error.is_some());
    }

    #[test]
    fn reads_an_alert_and_refuses_what_is_not_tls() {
        assert_eq!(
            read_server_answer(&mut &record(21, &[2, 40])[..]).unwrap(),
            ServerAnswer::Alert {
                level: 2,
                description: 40
            }
        );
        assert_eq!(alert_name(40), "handshake_failure");
        assert_eq!(alert_name(200), "alert 200");
        let err = read_server_answer(&mut &b"HTTP/1.1 400 Bad Request\r\n"[..]).unwrap_err();
        assert!(matches!(&err, AnswerError::NotTls { first_bytes } if first_bytes == b"HTTP/"));
        assert!(err.to_string().contains("\"HTTP/\""), "{err}");
        assert!(matches!(
            read_server_answer(&mut &b""[..]),
            Err(AnswerError::Closed)
        ));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        let header = [22, 3, 3, 0xff, 0xff];
        assert!(matches!(
            read_server_answer(&mut &header[..]),
            Err(AnswerError::TooLarge {
                what: "a record",
                ..
            })
        ));
        // A ServerHello claiming 16 MiB is refused on its header alone.
        let bytes = record(22, &[2, 0xff, 0xff, 0xff]);
        assert!(matches!(
            read_server_answer(&mut &bytes[..]),
            Err(AnswerError::TooLarge { len: 0xff_ffff, .. })
        ));
        // Endless change cipher spec records stop at the record bound.
        let bytes: Vec<u8> = (0..=MAX_ANSWER_RECORDS)
            .flat_map(|_| record(20, &[1]))
            .collect();
        assert!(matches!(
            read_server_answer(&mut &bytes[..]),
            Err(AnswerError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_hellos_are_errors() {
        // A session id of 33 bytes.
        let mut sh = server_hello([1; 32], 0xc02b, &[]);
        sh[4 + 2 + 32] = 33;
        assert!(read_server_answer(&mut &record(22, &sh)[..]).is_err());
        // The same extension twice.
        let twice = server_hello(
            [1; 32],
            0x1301,
            &[(0x002b, vec![3, 4]), (0x002b, vec![3, 4])],
        );
        assert!(matches!(
            read_server_answer(&mut &record(22, &twice)[..]),
            Err(AnswerError::Malformed(_))
        ));
        // Another handshake message first.
        assert!(matches!(
            read_server_answer(&mut &record(22, &message(11, &[0, 0, 0]))[..]),
            Err(AnswerError::Malformed(_))
        ));
    }

    #[test]
    fn every_truncation_and_flip_is_an_answer_or_an_error() {
        for bytes in [tls12_flight(), hrr(0x001d)] {
            for cut in 0..bytes.len() {
                let _ = read_server_answer(&mut &bytes[..cut]);
            }
            for i in 0..bytes.len() {
                let mut flipped = bytes.clone();
                flipped[i] ^= 0xff;
                let _ = read_server_answer(&mut &flipped[..]);
            }
        }
    }

    /// Guards the ClientHello framing every enumeration relies on.
    #[test]
    fn client_hellos_are_well_framed() {
        for version in VERSIONS {
            let offer = Offer::version(version);
            let bytes = client_hello(&offer, Some("swarm-manager"), &[9; 32], &[8; 32]);
            assert_eq!(&bytes[..3], &[22, 3, 1]);
            let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
            assert_eq!(bytes.len(), 5 + len);
            assert_eq!(bytes[5], 1);
            let mut r = Bytes(&bytes[6..]);
            let body = r.take(r.0.len()).unwrap();
            assert_eq!(
                usize::from(bytes[6]) << 16 | usize::from(bytes[7]) << 8 | usize::from(bytes[8]),
                body.len() - 3
            );
            let mut r = Bytes(&body[3..]);
            assert_eq!(r.u16().unwrap(), version.min(TLS12));
            assert_eq!(r.take(32).unwrap(), &[9; 32]);
            assert_eq!(r.u8().unwrap(), 32);
            r.take(32).unwrap();
            let suites = usize::from(r.u16().unwrap());
            assert_eq!(suites, 2 * offer.suites.len());
            r.take(suites).unwrap();
            assert_eq!(r.take(2).unwrap(), &[1, 0]);
            let exts_len = usize::from(r.u16().unwrap());
            let mut exts = Bytes(r.take(exts_len).unwrap());
            r.end().unwrap();
            let mut kinds = Vec::new();
            while !exts.0.is_empty() {
                let kind = exts.u16().unwrap();
                let len = usize::from(exts.u16().unwrap());
                let data = exts.take(len).unwrap();
                if kind == 0x0033 {
                    assert_eq!(data, &[0, 0], "an empty key_share");
                }
                if kind == 0x0000 {
                    assert_eq!(&data[5..], b"swarm-manager");
                }
                kinds.push(kind);
            }
            assert_eq!(kinds.contains(&0x002b), version == TLS13);
            assert_eq!(kinds.contains(&0x0033), version == TLS13);
        }
    }

    #[test]
    fn weaknesses_follow_the_suite() {
        let find = |name: &str| SUITES.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            find("TLS_AES_128_GCM_SHA256").weaknesses(),
            Vec::<String>::new()
        );
        assert_eq!(
            find("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256").weaknesses(),
            ["CBC mode"]
        );
        assert_eq!(
            find("TLS_RSA_WITH_3DES_EDE_CBC_SHA").weaknesses(),
            ["no forward secrecy", "3DES", "CBC mode", "SHA-1 MAC"]
        );
        assert_eq!(
            find("TLS_RSA_WITH_RC4_128_MD5").weaknesses(),
            ["no forward secrecy", "RC4", "MD5 MAC"]
        );
        assert!(find("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA").usable_in(TLS10));
        assert!(!find("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").usable_in(TLS11));
        assert!(!find("TLS_AES_128_GCM_SHA256").usable_in(TLS12));
        // Every code and name is listed once.
        for (i, s) in SUITES.iter().enumerate() {
            assert!(
                SUITES[i + 1..]
                    .iter()
                    .all(|t| t.code != s.code && t.name != s.name)
            );
        }
    }
}
