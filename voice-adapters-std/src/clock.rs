//! The real clock.

use std::time::{SystemTime, UNIX_EPOCH};

use voice_domain::ports::Clock;
use voice_domain::Timestamp;

/// The system clock: milliseconds since the Unix epoch (0 if the system clock is set before
/// 1970, rather than a panic).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_after_the_release_of_this_crate() {
        // 2026-01-01T00:00:00Z: a clock reading 0 (before 1970) or seconds would fail here.
        assert!(SystemClock.now().as_millis() > 1_767_225_600_000);
    }
}
