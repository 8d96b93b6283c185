//! The self-hosted server's adapter set for the voice domain.

use voice_adapters_memory::{MemoryStore, SystemClock, UuidIds};
use voice_domain::ports::Ports;

use crate::chat::SharedChat;
use crate::hub::HubNotifier;
use crate::relay::RelayChannels;
use crate::token::TokenIssuer;

/// Voice rooms in memory, the chat state as directory, the relay's channels, HMAC voice
/// tokens, and events through the connection hub.
pub struct ServerPorts;

impl Ports for ServerPorts {
    type Store = MemoryStore;
    type Directory = SharedChat;
    type Channels = RelayChannels;
    type Credentials = TokenIssuer;
    type Notifier = HubNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
}
