//! Conversions between the daemon's types and moat-api's wire types, and
//! the checks of request fields that name a command-line flag.

use std::time::Duration;

use moat_api::ErrorKind;
use moat_pki::Role;
use moat_store::model;

use crate::error::NodeError;

/// A role as the control API writes it.
pub(crate) fn api_role(role: Role) -> moat_api::Role {
    match role {
        Role::Manager => moat_api::Role::Manager,
        Role::Worker => moat_api::Role::Worker,
    }
}

/// A role as the control API gave it.
pub(crate) fn role(role: moat_api::Role) -> Role {
    match role {
        moat_api::Role::Manager => Role::Manager,
        moat_api::Role::Worker => Role::Worker,
    }
}

/// A node's availability as the control API writes it.
pub(crate) fn api_availability(a: model::Availability) -> moat_api::Availability {
    match a {
        model::Availability::Active => moat_api::Availability::Active,
        model::Availability::Pause => moat_api::Availability::Pause,
        model::Availability::Drain => moat_api::Availability::Drain,
    }
}

/// A node's availability as the control API gave it.
pub(crate) fn availability(a: moat_api::Availability) -> model::Availability {
    match a {
        moat_api::Availability::Active => model::Availability::Active,
        moat_api::Availability::Pause => model::Availability::Pause,
        moat_api::Availability::Drain => model::Availability::Drain,
    }
}

/// `--cert-expiry`: the lifetime asked for (or the default), checked
/// against the allowed range ([`moat_pki::CertExpiry::MIN`] to
/// [`moat_pki::CertExpiry::MAX`], the one the CLI checks too).
pub(crate) fn cert_expiry(secs: Option<u64>) -> Result<Duration, NodeError> {
    moat_pki::CertExpiry::from_secs_or_default(secs)
        .map(|e| e.duration())
        .map_err(|e| {
            NodeError::new(ErrorKind::InvalidArgument, format!("--cert-expiry: {e}")).hint(format!(
                "give a lifetime from {} to {}, e.g. `--cert-expiry 24h`",
                moat_pki::compact_duration(moat_pki::CertExpiry::MIN),
                moat_pki::compact_duration(moat_pki::CertExpiry::MAX)
            ))
        })
}

/// Label keys: 1 to 128 characters.
pub(crate) fn check_labels<'a>(keys: impl Iterator<Item = &'a String>) -> Result<(), NodeError> {
    for key in keys {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(NodeError::new(
                ErrorKind::InvalidArgument,
                format!("label key {key:?} must be 1 to 128 characters"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_availability_round_trip() {
        for r in [Role::Manager, Role::Worker] {
            assert_eq!(role(api_role(r)), r);
        }
        for a in [
            model::Availability::Active,
            model::Availability::Pause,
            model::Availability::Drain,
        ] {
            assert_eq!(availability(api_availability(a)), a);
        }
    }

    #[test]
    fn cert_expiry_defaults_and_names_the_flag() {
        assert_eq!(cert_expiry(None).unwrap(), Duration::from_secs(24 * 3600));
        assert_eq!(cert_expiry(Some(60)).unwrap(), Duration::from_secs(60));
        let e = cert_expiry(Some(1)).unwrap_err();
        assert!(
            e.message().starts_with("--cert-expiry: "),
            "{}",
            e.message()
        );
        // An API caller is told what to send, from the same constants.
        assert_eq!(
            e.hint_text(),
            Some("give a lifetime from 1m to 365d, e.g. `--cert-expiry 24h`")
        );
        assert!(cert_expiry(Some(moat_pki::CertExpiry::MAX.as_secs() + 1)).is_err());
        assert!(cert_expiry(Some(moat_pki::CertExpiry::MAX.as_secs())).is_ok());
    }
}
