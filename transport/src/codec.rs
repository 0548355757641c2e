//! The payload encoding: openraft's serde types as JSON, size-checked.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{MAX_MESSAGE_BYTES, TransportError};

/// Room left in a message for the protobuf framing and the JSON of a
/// snapshot chunk's metadata next to its bytes.
pub(crate) const FRAMING_ALLOWANCE: usize = 64 * 1024;

/// Encodes `value` as JSON, refusing results that would not fit in a
/// message.
pub(crate) fn encode<T: Serialize>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, TransportError> {
    let bytes = serde_json::to_vec(value).map_err(|e| TransportError::Codec {
        what,
        reason: e.to_string(),
    })?;
    check_size(what, bytes.len(), MAX_MESSAGE_BYTES - FRAMING_ALLOWANCE)?;
    Ok(bytes)
}

/// Decodes JSON received from a peer. The input is already bounded by the
/// gRPC message limit; serde_json bounds nesting depth.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, TransportError> {
    serde_json::from_slice(bytes).map_err(|e| TransportError::Codec {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn check_size(
    what: &'static str,
    size: usize,
    limit: usize,
) -> Result<(), TransportError> {
    if size > limit {
        return Err(TransportError::TooLarge {
            what,
            size: size as u64,
            limit: limit as u64,
        });
    }
    Ok(())
}
