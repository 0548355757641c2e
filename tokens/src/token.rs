//! The join token itself: generation, text form, CA check and matching.

use std::fmt;
use std::str::FromStr;

use moat_codec::Armor;
use moat_pki::Role;
use rand_core::{CryptoRng, RngCore};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

use crate::ca::CA_DIGEST_BYTES;
use crate::{CaDigest, TokenError, TokenFingerprint};

/// The text every moat join token starts with (followed by `-`).
pub const TOKEN_PREFIX: &str = "MOATTKN";

/// The one text format version this build writes and reads.
pub const TOKEN_VERSION: u32 = 1;

/// Bytes of the secret half of a token: 128 bits.
const SECRET_BYTES: usize = 16;

/// The armor of a join token: `MOATTKN-1-<ca digest>-<secret>-<check>`.
const ARMOR: Armor = Armor {
    prefix: TOKEN_PREFIX,
    version: TOKEN_VERSION,
    fields: &[CA_DIGEST_BYTES, SECRET_BYTES],
};

/// Characters in the text form of a join token (98).
pub const TOKEN_CHARS: usize = ARMOR.text_len();

/// How Docker Swarm join tokens start; recognised only to say so.
const DOCKER_PREFIX: &str = "SWMTKN-";

/// The credential a node presents to join a cluster, and the pin on the
/// cluster's root CA that the node checks before presenting it.
///
/// Text form: `MOATTKN-1-<52 chars: SHA-256 of the root CA bundle>-<26
/// chars: 128-bit secret>-<8 chars: checksum>`, see
/// `docs/formats/join-token.md`. Holding a `JoinToken` means the text was
/// well formed and its checksum matched.
///
/// The secret is kept in a [`Zeroizing`] buffer. The type has no `Display`
/// and no `PartialEq`; its `Debug` prints `"…"` for the secret; the text is
/// read only through [`JoinToken::expose_secret`]; tokens are compared only
/// in constant time ([`JoinToken::ct_eq`], [`match_role`]).
///
/// # Serialization writes the secret
///
/// `Serialize` writes the full token text, secret included, and
/// `Deserialize` parses it back (via [`FromStr`]). Serialize a token only
/// into an encrypted store; for logs and reports use
/// [`JoinToken::fingerprint`] or [`JoinToken::info`].
#[derive(Clone)]
pub struct JoinToken {
    ca_digest: CaDigest,
    secret: Zeroizing<[u8; SECRET_BYTES]>,
}

/// A non-secret description of a join token, for `moat token inspect`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenInfo {
    /// Text format version of the token.
    pub version: u32,
    /// The root CA bundle digest the token pins.
    pub ca_digest: CaDigest,
    /// The token's non-secret fingerprint.
    pub fingerprint: TokenFingerprint,
    /// Whether the checksum matched. A [`JoinToken`] only exists once its
    /// text passed the checksum, so [`JoinToken::info`] always reports
    /// `true`; the field states it explicitly in inspect output.
    pub checksum_valid: bool,
}

impl JoinToken {
    /// A new token pinning exactly `ca_bundle` (the PEM bundle of root
    /// certificates managers serve to joining nodes), with a secret from
    /// the operating system's CSPRNG.
    pub fn generate(ca_bundle: &[u8]) -> Result<Self, TokenError> {
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret[..])
            .map_err(|_| TokenError::Randomness)?;
        Ok(Self {
            ca_digest: CaDigest::of(ca_bundle),
            secret,
        })
    }

    /// Like [`JoinToken::generate`] with the secret drawn from `rng`
    /// (tests inject a seeded one).
    pub fn generate_with(
        ca_bundle: &[u8],
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<Self, TokenError> {
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        rng.try_fill_bytes(&mut secret[..])
            .map_err(|_| TokenError::Randomness)?;
        Ok(Self {
            ca_digest: CaDigest::of(ca_bundle),
            secret,
        })
    }

    /// The full token text, secret included: the only way to read it.
    /// Show it to the operator or write it to an encrypted store; never log
    /// it.
    pub fn expose_secret(&self) -> Zeroizing<String> {
        ARMOR.encode(&[self.ca_digest.as_bytes(), &self.secret[..]])
    }

    /// The root CA bundle digest this token pins.
    pub fn ca_digest(&self) -> &CaDigest {
        &self.ca_digest
    }

    /// The token's non-secret fingerprint, safe to log.
    pub fn fingerprint(&self) -> TokenFingerprint {
        TokenFingerprint::compute(&self.secret[..], &self.ca_digest)
    }

    /// A non-secret report on this token.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            version: TOKEN_VERSION,
            ca_digest: self.ca_digest,
            fingerprint: self.fingerprint(),
            checksum_valid: true,
        }
    }

    /// Checks the CA bundle a manager served against the pin, before the
    /// joining node sends anything secret.
    ///
    /// The SHA-256 of the whole `bundle` must equal the pinned digest
    /// (compared in constant time); a bundle with any extra byte or extra
    /// root fails.
    pub fn verify_ca(&self, bundle: &[u8]) -> Result<(), TokenError> {
        let found = CaDigest::of(bundle);
        if bool::from(self.ca_digest.ct_eq_choice(&found)) {
            Ok(())
        } else {
            Err(TokenError::CaMismatch {
                expected: self.ca_digest,
                found,
            })
        }
    }

    /// Whether both tokens are the same (CA digest and secret), compared in
    /// constant time.
    pub fn ct_eq(&self, other: &JoinToken) -> bool {
        bool::from(self.ct_eq_choice(other))
    }

    fn ct_eq_choice(&self, other: &JoinToken) -> Choice {
        self.ca_digest.ct_eq_choice(&other.ca_digest) & self.secret[..].ct_eq(&other.secret[..])
    }
}

/// Which role the `presented` token grants, given the cluster's current
/// `worker` and `manager` tokens; `None` if it matches neither.
///
/// The presented token is compared with both stored tokens, every byte of
/// CA digest and secret, in constant time and without an early exit, so
/// timing reveals neither how much of a token matched nor which one did.
/// If the two stored tokens were ever equal, the less privileged
/// [`Role::Worker`] is returned.
pub fn match_role(presented: &JoinToken, worker: &JoinToken, manager: &JoinToken) -> Option<Role> {
    let is_worker = presented.ct_eq_choice(worker);
    let is_manager = presented.ct_eq_choice(manager);
    if bool::from(is_worker) {
        Some(Role::Worker)
    } else if bool::from(is_manager) {
        Some(Role::Manager)
    } else {
        None
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    /// Parses the text form; surrounding whitespace is ignored. Checks run
    /// from the outside in (prefix, version, length, characters, checksum),
    /// so the error names the first thing that is wrong.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        if text.starts_with(DOCKER_PREFIX) {
            return Err(TokenError::DockerToken);
        }
        let fields = ARMOR.decode(text)?;
        // The armor returns one buffer per declared field, of the declared
        // size; anything else is reported rather than indexed into.
        let shape_error = || TokenError::WrongLength {
            expected: TOKEN_CHARS,
            found: text.chars().count(),
        };
        let (Some(digest), Some(secret_field), None) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(shape_error());
        };
        let digest: [u8; CA_DIGEST_BYTES] =
            digest.as_slice().try_into().map_err(|_| shape_error())?;
        let secret_field: &[u8; SECRET_BYTES] = secret_field
            .as_slice()
            .try_into()
            .map_err(|_| shape_error())?;
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        secret.copy_from_slice(secret_field);
        Ok(Self {
            ca_digest: CaDigest::from_bytes(digest),
            secret,
        })
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &format_args!("{}", self.ca_digest))
            .field("fingerprint", &format_args!("{}", self.fingerprint()))
            .field("secret", &"…")
            .finish()
    }
}

impl serde::Serialize for JoinToken {
    /// Writes the full token text, secret included: encrypted stores only.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.expose_secret())
    }
}

impl<'de> serde::Deserialize<'de> for JoinToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        text.parse().map_err(serde::de::Error::custom)
    }
}
