//! `listRooms` asks the voice store once per page, not once per listed room (issue 13): a user
//! paging through every room in a loop used to cost one voice lookup per room they are an
//! approved member of. The voice store here is the memory store behind a counter of calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chat_domain::{
    ActiveVoiceRooms, AdmitAll, ChatAdapters, ChatEvent, ChatEvents, ChatLimits, ChatService,
    ResumeClaims, SessionTokens,
};
use futures::executor::block_on;
use voice_adapters_memory::{ManualClock, MemoryChat, MemoryStore, SequentialIds};
use voice_domain::ports::{PortFailure, VoiceRoomStore};
use voice_domain::room::{Capacity, SignalingChannel};
use voice_domain::{
    ChannelArn, ChannelName, ChatRoomId, ConnectionId, Timestamp, UserId, VoiceRoom, VoiceRoomId,
};

/// The memory voice store, counting the calls of each kind.
#[derive(Default)]
struct Counted {
    inner: MemoryStore,
    one: AtomicUsize,
    many: AtomicUsize,
    asked: AtomicUsize,
}

#[async_trait]
impl ActiveVoiceRooms for Counted {
    async fn active_voice_room(
        &self,
        chat: &ChatRoomId,
    ) -> Result<Option<VoiceRoomId>, PortFailure> {
        self.one.fetch_add(1, Ordering::SeqCst);
        self.inner.active_voice_room(chat).await
    }

    async fn active_voice_rooms(
        &self,
        chats: &[ChatRoomId],
    ) -> Result<HashMap<ChatRoomId, VoiceRoomId>, PortFailure> {
        self.many.fetch_add(1, Ordering::SeqCst);
        self.asked.fetch_add(chats.len(), Ordering::SeqCst);
        self.inner.active_voice_rooms(chats).await
    }
}

struct Quiet;

#[async_trait]
impl ChatEvents for Quiet {
    async fn push(&self, _: &[ConnectionId], _: &ChatEvent) {}
}

struct NoTokens;

impl SessionTokens for NoTokens {
    fn issue(&self, _: &ResumeClaims) -> String {
        String::new()
    }
    fn verify(&self, _: &str) -> Option<ResumeClaims> {
        None
    }
}

fn conn(s: &str) -> ConnectionId {
    ConnectionId::parse(s).unwrap()
}

/// Starts a voice room in `chat` directly in the store.
fn start_voice(store: &MemoryStore, chat: &str, n: usize) -> String {
    let id = format!("voice-{n}");
    let room = VoiceRoom::start(
        VoiceRoomId::parse(&id).unwrap(),
        ChatRoomId::parse(chat).unwrap(),
        UserId::parse("someone").unwrap(),
        conn(&format!("vc-{n}")),
        SignalingChannel {
            name: ChannelName::from_unique(&format!("lookups-{n}")).unwrap(),
            arn: ChannelArn::parse(format!("arn:test:channel/voice-lookups-{n}")).unwrap(),
        },
        Capacity::default(),
        Timestamp::from_millis(1_700_000_000_000),
    )
    .0;
    block_on(store.create_if_none_active(&room)).unwrap();
    id
}

#[test]
fn list_rooms_asks_the_voice_store_once_per_page() {
    let voice = Arc::new(Counted::default());
    let chat = ChatService::new(ChatAdapters {
        store: Arc::new(MemoryChat::new()),
        events: Arc::new(Quiet),
        tokens: Arc::new(NoTokens),
        ids: Arc::new(SequentialIds::default()),
        voice: voice.clone(),
        clock: Arc::new(ManualClock::default()),
    })
    .with_sign_ups(Arc::new(AdmitAll))
    .with_limits(ChatLimits {
        rooms_page: 3,
        ..ChatLimits::default()
    });
    let ada = block_on(chat.hello(&conn("c-ada"), "Ada", None)).unwrap();
    let ada = UserId::parse(&ada.user_id).unwrap();
    let bo = block_on(chat.hello(&conn("c-bo"), "Bo", None)).unwrap();
    let bo = UserId::parse(&bo.user_id).unwrap();
    let rooms: Vec<String> = (0..7)
        .map(|i| {
            block_on(chat.create_room(&ada, &format!("room {i}")))
                .unwrap()
                .id
                .to_string()
        })
        .collect();
    let live: HashMap<String, String> = [1, 4, 6]
        .into_iter()
        .map(|i| (rooms[i].clone(), start_voice(&voice.inner, &rooms[i], i)))
        .collect();

    // Ada admins all 7 (approved in each): 3 pages, one lookup each, naming every room once.
    let mut seen = HashMap::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = block_on(chat.list_rooms(&ada, cursor.as_deref(), None)).unwrap();
        pages += 1;
        for r in page.rooms {
            seen.insert(r.room_id, r.voice_room_id);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(voice.many.load(Ordering::SeqCst), 3, "one lookup per page");
    assert_eq!(
        voice.asked.load(Ordering::SeqCst),
        7,
        "each room asked once"
    );
    assert_eq!(voice.one.load(Ordering::SeqCst), 0, "no lookup per room");
    for (room, voice_room) in &seen {
        assert_eq!(voice_room.as_ref(), live.get(room), "room {room}");
    }
    assert_eq!(seen.len(), 7);

    // Bo is a member of none: no voice room is shown to him, and none is looked up.
    let before = voice.many.load(Ordering::SeqCst);
    let page = block_on(chat.list_rooms(&bo, None, None)).unwrap();
    assert!(page.rooms.iter().all(|r| r.voice_room_id.is_none()));
    assert_eq!(voice.many.load(Ordering::SeqCst), before);
}
