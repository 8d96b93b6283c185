//! The self-hosted server's adapters: the voice and chat domains' ports implemented for one
//! process. They sit apart from the edge code (HTTP, WebSocket, listener) so that the edge only
//! translates transport and the adapters only implement ports.
//!
//! - [`ports`]: the voice domain's adapter set ([`ports::ServerPorts`]).
//! - [`chat`]: the chat domain's events adapter.
//! - [`relay`]: the signaling channels port and the signal relay.
//! - [`token`]: HMAC voice tokens (the credentials port).
//! - [`ice`]: STUN/TURN servers with TURN REST credentials.
//! - [`hub`]: per-connection byte-bounded queues (the notifier port).

pub mod chat;
pub mod hub;
pub mod ice;
pub mod ports;
pub mod relay;
pub mod token;
