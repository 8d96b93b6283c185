//! The server's adapter for the chat domain's events port: events pushed through the connection
//! [`Hub`]. Resume tokens are `voice_adapters_std::ResumeTokens` (shared with the Lambda). The
//! rules themselves live in `chat-domain`; the stores in `voice-adapters-memory` and
//! `voice-adapters-sqlite`.

use async_trait::async_trait;
use chat_domain::{event_frame, ChatEvent, ChatEvents};
use voice_domain::ConnectionId;

use crate::adapters::hub::Hub;

/// [`ChatEvents`] over the hub: each event serialised once and queued for every recipient.
#[derive(Clone)]
pub struct HubChatEvents {
    hub: Hub,
}

impl HubChatEvents {
    /// Events through `hub`.
    pub fn new(hub: Hub) -> Self {
        Self { hub }
    }
}

#[async_trait]
impl ChatEvents for HubChatEvents {
    async fn push(&self, to: &[ConnectionId], event: &ChatEvent) {
        let frame = event_frame(event);
        for c in to {
            // A connection that is gone or dropped is cleaned up by its own socket task.
            let _ = self.hub.send(c, frame.clone());
        }
    }
}
