//! [`PortFailure`]: how any port reports a dependency that failed outside its normal answers.
//!
//! Its own module (re-exported as `ports::PortFailure`) so that port modules other than `ports`
//! (the channel pool in `pool`) can use it without `ports` and them importing each other.

/// A dependency failed in a way that is not part of the port's normal answers: a timeout,
/// throttling, a network error, a permission problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortFailure {
    /// Whether the same call may succeed if tried again (throttling, timeouts, 5xx).
    pub retryable: bool,
    /// What went wrong, for logs. Must not contain secrets.
    pub message: String,
}

impl PortFailure {
    /// A failure worth retrying (throttled, timed out, temporarily unavailable).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure that will not go away by itself (misconfiguration, access denied, quota).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}
