//! Sequential ids, for readable tests (random ones for real use are
//! `voice_adapters_std::UuidIds`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use voice_domain::ports::IdGenerator;
use voice_domain::{ChannelName, VoiceRoomId};

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
