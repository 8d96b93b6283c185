//! Id generators: random uuids for real use, sequential ones for readable tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use voice_domain::ports::IdGenerator;
use voice_domain::{ChannelName, VoiceRoomId};

/// Random (v4) uuids: unique across processes, so channel names never collide in an account.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidIds;

impl IdGenerator for UuidIds {
    fn voice_room_id(&self) -> VoiceRoomId {
        VoiceRoomId::parse(uuid::Uuid::new_v4().to_string()).expect("a uuid is a valid id")
    }

    fn channel_name(&self) -> ChannelName {
        ChannelName::from_unique(&uuid::Uuid::new_v4().to_string())
            .expect("a uuid is a valid channel name suffix")
    }
}

/// `vr-1`, `vr-2`, ... and `voice-ch-1`, ...; clones share the counter.
#[derive(Debug, Clone, Default)]
pub struct SequentialIds(Arc<AtomicU64>);

impl SequentialIds {
    /// The next number of the shared counter (1, 2, ...).
    pub(crate) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl IdGenerator for SequentialIds {
    fn voice_room_id(&self) -> VoiceRoomId {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        VoiceRoomId::parse(format!("vr-{n}")).expect("valid id")
    }

    fn channel_name(&self) -> ChannelName {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        ChannelName::from_unique(&format!("ch-{n}")).expect("valid channel name")
    }
}
