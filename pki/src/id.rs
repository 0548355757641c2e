//! Node and cluster identifiers and node roles.

use std::fmt;
use std::str::FromStr;

use moat_codec::base32;
use rand_core::{OsRng, RngCore};

use crate::IdError;

/// Random bytes behind every identifier: 128 bits, so collisions are out of
/// reach even for clusters that churn through millions of nodes.
const ID_BYTES: usize = 16;

/// Characters in the text form of an identifier.
pub const ID_CHARS: usize = base32::encoded_len(ID_BYTES);

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; ID_BYTES]);

        impl $name {
            /// A fresh identifier from the operating system's CSPRNG.
            pub fn generate() -> Self {
                Self::generate_with(&mut OsRng)
            }

            /// The 16 bytes of the identifier.
            pub const fn as_bytes(&self) -> &[u8; ID_BYTES] {
                &self.0
            }

            /// A fresh identifier from `rng` (tests inject a seeded one).
            pub fn generate_with(rng: &mut impl RngCore) -> Self {
                let mut bytes = [0u8; ID_BYTES];
                rng.fill_bytes(&mut bytes);
                Self(bytes)
            }
        }

        /// The all-zero identifier. It is never generated; it exists only
        /// because openraft requires its node-id type to have a default.
        impl Default for $name {
            fn default() -> Self {
                Self([0u8; ID_BYTES])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&base32::encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut bytes = [0u8; ID_BYTES];
                base32::decode_into(s, &mut bytes).map_err(|reason| IdError {
                    what: $what,
                    reason,
                })?;
                Ok(Self(bytes))
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

random_id!(
    /// Identifies one node for its whole life in a cluster: the `CN` of its
    /// certificates. 128 random bits written as 26 lower-case base32
    /// characters (`0-9a-v`).
    NodeId,
    "node id"
);

random_id!(
    /// Identifies a cluster: the `O` of every certificate its CA issues.
    /// 128 random bits written as 26 lower-case base32 characters.
    ClusterId,
    "cluster id"
);

/// What a node may do in the cluster; carried in the certificate's `OU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the replicated store, runs the CA, serves the control API.
    Manager,
    /// Holds only its own identity and the list of managers.
    Worker,
}

impl Role {
    /// Both roles, managers first.
    pub const ALL: [Role; 2] = [Role::Manager, Role::Worker];

    /// The `OU` value carried in certificates: `moat-manager` or `moat-worker`.
    pub const fn organizational_unit(self) -> &'static str {
        match self {
            Role::Manager => "moat-manager",
            Role::Worker => "moat-worker",
        }
    }

    /// Parses a certificate `OU` value.
    pub fn from_organizational_unit(ou: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|r| r.organizational_unit() == ou)
    }

    /// The plain name used on the command line and in output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = crate::RoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(crate::RoleError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_are_fixed_length_lower_case() {
        let id = NodeId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), ID_CHARS);
        assert_eq!(ID_CHARS, 26);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
        );
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert_ne!(NodeId::generate(), id, "two draws of 128 bits collided");
    }

    #[test]
    fn id_parse_errors_name_the_kind() {
        let err = "short".parse::<ClusterId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cluster id: expected 26 characters, found 5"
        );
        let upper = NodeId::generate().to_string().to_uppercase();
        assert!(upper.parse::<NodeId>().is_err());
    }

    #[test]
    fn roles_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(
                Role::from_organizational_unit(role.organizational_unit()),
                Some(role)
            );
        }
        assert!("admin".parse::<Role>().is_err());
        assert_eq!(Role::from_organizational_unit("swarm-manager"), None);
    }

    proptest! {
        #[test]
        fn id_parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<NodeId>();
        }

        #[test]
        fn id_round_trips(bytes in proptest::array::uniform16(any::<u8>())) {
            let id = NodeId(bytes);
            prop_assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
        }
    }
}
