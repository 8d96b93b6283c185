//! The self-hosted server's adapter set for the voice domain.

use voice_adapters_std::{SystemClock, UuidIds};
use voice_domain::ports::Ports;

use crate::adapters::hub::HubNotifier;
use crate::adapters::relay::RelayChannels;
use crate::adapters::store::ServerStore;
use crate::adapters::token::TokenIssuer;
use chat_domain::StoreDirectory;

/// Voice rooms in SQLite (the default, `--data-dir`) or in memory (`--in-memory`), the chat
/// state as directory, the relay's channels, HMAC voice tokens, and events through the
/// connection hub.
pub struct ServerPorts;

impl Ports for ServerPorts {
    type Store = ServerStore;
    type Directory = StoreDirectory;
    type Channels = RelayChannels;
    type Credentials = TokenIssuer;
    type Notifier = HubNotifier;
    type Clock = SystemClock;
    type Ids = UuidIds;
    type Pool = voice_domain::pool::NoPool;
}
