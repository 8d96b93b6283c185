//! Time as the domain sees it: milliseconds since the Unix epoch, from the [`Clock`] port.
//!
//! A plain integer rather than `std::time::SystemTime` so that rooms can be stored, compared and
//! serialised without surprises, and so that tests can drive time by hand.
//!
//! [`Clock`]: crate::ports::Clock

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An instant, in milliseconds since the Unix epoch (UTC).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// An instant from milliseconds since the Unix epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (what DynamoDB TTL attributes want).
    pub const fn as_secs(self) -> u64 {
        self.0 / 1000
    }

    /// This instant plus `d`, saturating rather than overflowing.
    pub fn plus(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this instant is; zero if it is not after.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
