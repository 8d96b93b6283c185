//! The server's adapters for the chat domain's ports: events pushed through the connection
//! [`Hub`], and resume tokens signed with the server's [`TokenKey`]. The rules themselves live
//! in `chat-domain`; the stores in `voice-adapters-memory` and `voice-adapters-sqlite`.

use async_trait::async_trait;
use chat_domain::{event_frame, ChatEvent, ChatEvents, ResumeClaims, SessionTokens};
use voice_domain::ConnectionId;

use crate::adapters::hub::Hub;
use crate::adapters::token::TokenKey;

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

/// Resume tokens are HMACs of the user id, issue time and token generation under the server's
/// key (see `token.rs`).
impl SessionTokens for TokenKey {
    fn issue(&self, claims: &ResumeClaims) -> String {
        self.resume_token(claims).expose().to_owned()
    }

    fn verify(&self, token: &str) -> Option<ResumeClaims> {
        self.resume_claims(token)
    }
}
