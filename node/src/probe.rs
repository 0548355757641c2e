//! What the agent reports when a load generator watches it: round trips
//! of heartbeats and renewals, in histograms any number of in-process
//! nodes share (see `inprocess`). A leaf: it imports nothing of the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Round trips the agent saw, in a fixed histogram shared by any number
/// of nodes: millisecond buckets up to [`LatencyHistogram::MAX_MS`], then
/// one overflow bucket. Recording is one atomic add.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..=Self::MAX_MS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    /// The largest round trip told apart, in milliseconds; longer ones
    /// count as this.
    pub const MAX_MS: usize = 60_000;

    /// Counts one round trip.
    pub fn record(&self, took: Duration) {
        let ms = usize::try_from(took.as_millis())
            .unwrap_or(Self::MAX_MS)
            .min(Self::MAX_MS);
        if let Some(b) = self.buckets.get(ms) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts per millisecond bucket (index = milliseconds).
    pub fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// What the agent reports to, when one is attached.
#[derive(Debug, Default)]
pub struct AgentProbe {
    /// Successful heartbeats' round trips.
    pub heartbeats: LatencyHistogram,
    /// Successful renewals' round trips (key generation included).
    pub renewals: LatencyHistogram,
    /// Heartbeats that failed.
    pub heartbeat_failures: AtomicU64,
    /// Renewals that failed.
    pub renewal_failures: AtomicU64,
}
