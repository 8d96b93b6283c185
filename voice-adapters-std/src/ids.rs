//! Random ids for real use.

use chat_domain::ChatIds;
use voice_domain::ports::IdGenerator;
use voice_domain::{ChannelName, ChatRoomId, UserId, VoiceRoomId};

/// Random (v4) uuids: unique across processes, so channel names never collide in an account
/// and user and room ids cannot be guessed.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidIds;

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl IdGenerator for UuidIds {
    fn voice_room_id(&self) -> VoiceRoomId {
        VoiceRoomId::parse(uuid()).expect("a uuid is a valid id")
    }

    fn channel_name(&self) -> ChannelName {
        ChannelName::from_unique(&uuid()).expect("a uuid is a valid channel name suffix")
    }
}

impl ChatIds for UuidIds {
    fn user_id(&self) -> UserId {
        UserId::parse(uuid()).expect("a uuid is a valid user id")
    }

    fn chat_room_id(&self) -> ChatRoomId {
        ChatRoomId::parse(uuid()).expect("a uuid is a valid room id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_fresh_and_channel_names_carry_the_prefix() {
        assert_ne!(UuidIds.voice_room_id(), UuidIds.voice_room_id());
        assert_ne!(UuidIds.user_id(), UuidIds.user_id());
        assert_ne!(UuidIds.chat_room_id(), UuidIds.chat_room_id());
        assert!(UuidIds.channel_name().as_str().starts_with("voice-"));
    }
}
