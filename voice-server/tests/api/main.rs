//! Integration tests of voice-server over real sockets: the server is started through the
//! library API on 127.0.0.1:0 and driven by WebSocket and HTTP clients, as a browser would.

mod chat;
mod http;
mod lifecycle;
mod moderation;
mod relay;
mod support;
mod voice;
