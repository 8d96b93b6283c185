//! The self-hosted server's adapters: the voice and chat domains' ports implemented for one
//! process. They sit apart from the edge code (HTTP, WebSocket, listener) so that the edge only
//! translates transport and the adapters only implement ports.
//!
//! - [`ports`]: the voice domain's adapter set ([`ports::ServerPorts`]).
//! - [`store`]: the voice-room store the server runs on ([`store::ServerStore`]).
//! - [`chat`]: the chat domain's events adapter.
//! - [`relay`]: the signaling channels port and the signal relay; [`relay_cache`]: what it
//!   keeps between signals (verified tokens, rooms as last read).
//! - [`token`]: HMAC voice tokens (the credentials port).
//! - [`ice`]: STUN/TURN servers with TURN REST credentials.
//! - [`hub`]: per-connection byte-bounded queues (the notifier port).

pub mod chat;
pub mod hub;
pub mod ice;
pub mod ports;
pub mod relay;
pub mod relay_cache;
pub mod store;
pub mod token;
