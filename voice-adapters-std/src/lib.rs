//! # voice-adapters-std
//!
//! The production adapters that need nothing but std and the OS's randomness, so every
//! deployment (the self-hosted server, the Lambda, an embedding backend) uses the same ones
//! without depending on the test doubles of `voice-adapters-memory`:
//!
//! - [`clock`]: [`SystemClock`], the voice and chat domains' `Clock`.
//! - [`ids`]: [`UuidIds`], random v4 uuids for voice rooms, channels, users and chat rooms.
//! - [`key`]: [`HmacKey`], the HMAC-SHA256 key every signed token of this product uses.
//! - [`resume`]: [`ResumeTokens`], the chat domain's `SessionTokens` port (resume tokens signed
//!   with an [`HmacKey`]).
#![warn(missing_docs)]

pub mod clock;
pub mod ids;
pub mod key;
pub mod resume;

pub use clock::SystemClock;
pub use ids::UuidIds;
pub use key::HmacKey;
pub use resume::{ResumeTokens, LEGACY_RESUME_ISSUED_AT_MS};
