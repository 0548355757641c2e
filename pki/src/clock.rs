//! The clock certificates are issued and checked against.
//!
//! Every time a certificate is issued, installed or verified — by this
//! crate, by the TLS configurations of a [`crate::TlsContext`] and by the
//! transport's per-call checks — it reads one [`Clock`], so that a test
//! (or a node deliberately run ahead, behind a `danger` option) sees one
//! consistent time everywhere.

use std::fmt::Debug;
use std::sync::Arc;

use rustls::pki_types::UnixTime;
use time::OffsetDateTime;

/// The time against which certificates are issued and checked.
pub trait Clock: Send + Sync + Debug + 'static {
    /// The current time.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// rustls reads the time of a handshake through this adapter.
#[derive(Debug)]
pub(crate) struct HandshakeTime(pub(crate) Arc<dyn Clock>);

impl rustls::time_provider::TimeProvider for HandshakeTime {
    fn current_time(&self) -> Option<UnixTime> {
        let secs = u64::try_from(self.0.now().unix_timestamp()).ok()?;
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            secs,
        )))
    }
}
