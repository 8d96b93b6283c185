//! Quotas under racing requests (issue 13): two simultaneous `createRoom`s by one user, two
//! `requestJoin`s to one room, or two `banMember`s in one room, must not pass a quota by one.
//!
//! A read-then-write check ("count, then insert") lets both requests read the count before
//! either writes. This test forces exactly that interleaving: the store in front of the memory
//! chat holds every write at a barrier until all racing requests have reached it (so every
//! read the rules make before the write has happened). With the check in the service only,
//! both writes land (3 rooms for a quota of 2, 2 requests waiting for a quota of 1); with the
//! store checking the count in the same step as the write, exactly the quota lands.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use chat_domain::{
    ChatAdapters, ChatError, ChatEvent, ChatEvents, ChatLimits, ChatMessage, ChatService,
    ChatStore, ChatStoreError, JoinQuotas, MemberEntry, Page, ResumeClaims, RoomRecord,
    RoomSummary, SessionTokens, StoredMessage, UserUsage,
};
use futures::executor::block_on;
use futures::future::join_all;
use voice_adapters_memory::{ManualClock, MemoryChat, MemoryStore, SequentialIds};
use voice_domain::ports::{ChatDirectory, DirectoryError, MemberState, Membership};
use voice_domain::{ChatRoomId, ConnectionId, UserId};

/// An async barrier for one thread: the `n`-th arrival releases everyone.
#[derive(Clone)]
struct Barrier(Arc<Mutex<(usize, usize, Vec<Waker>)>>);

impl Barrier {
    fn new(n: usize) -> Self {
        Self(Arc::new(Mutex::new((n, 0, Vec::new()))))
    }

    fn wait(&self) -> impl Future<Output = ()> + Send {
        let me = self.clone();
        let mut arrived = false;
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut g = me.0.lock().unwrap();
            if !arrived {
                arrived = true;
                g.1 += 1;
            }
            if g.1 >= g.0 {
                for w in g.2.drain(..) {
                    w.wake();
                }
                Poll::Ready(())
            } else {
                g.2.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// The memory chat, with `create_room`, `request_join` and `remove_member` held at a barrier.
struct HeldWrites {
    inner: MemoryChat,
    barrier: Mutex<Option<Barrier>>,
}

impl HeldWrites {
    fn hold(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let b = self.barrier.lock().unwrap().clone();
        Box::pin(async move {
            if let Some(b) = b {
                b.wait().await;
            }
        })
    }
}

#[async_trait]
impl ChatDirectory for HeldWrites {
    async fn user_of(&self, c: &ConnectionId) -> Result<Option<UserId>, DirectoryError> {
        self.inner.user_of(c).await
    }
    async fn membership(
        &self,
        r: &ChatRoomId,
        u: &UserId,
    ) -> Result<Option<Membership>, DirectoryError> {
        self.inner.membership(r, u).await
    }
    async fn connections_of(&self, r: &ChatRoomId) -> Result<Vec<ConnectionId>, DirectoryError> {
        self.inner.connections_of(r).await
    }
}

#[async_trait]
impl ChatStore for HeldWrites {
    async fn bind_connection(
        &self,
        c: &ConnectionId,
        u: &UserId,
        n: &str,
    ) -> Result<(), ChatStoreError> {
        self.inner.bind_connection(c, u, n).await
    }
    async fn unbind_connection(&self, c: &ConnectionId) -> Result<(), ChatStoreError> {
        self.inner.unbind_connection(c).await
    }
    async fn user_name(&self, u: &UserId) -> Result<Option<String>, ChatStoreError> {
        self.inner.user_name(u).await
    }
    async fn connections_of_user(&self, u: &UserId) -> Result<Vec<ConnectionId>, ChatStoreError> {
        self.inner.connections_of_user(u).await
    }
    async fn identified_connections(&self) -> Result<Vec<ConnectionId>, ChatStoreError> {
        self.inner.identified_connections().await
    }
    async fn rooms_of_member(&self, u: &UserId) -> Result<Vec<ChatRoomId>, ChatStoreError> {
        self.inner.rooms_of_member(u).await
    }
    async fn create_room(&self, r: &RoomRecord, max: usize) -> Result<(), ChatStoreError> {
        self.hold().await;
        self.inner.create_room(r, max).await
    }
    async fn usage_of(&self, u: &UserId) -> Result<UserUsage, ChatStoreError> {
        self.inner.usage_of(u).await
    }
    async fn token_generation(&self, u: &UserId) -> Result<u64, ChatStoreError> {
        self.inner.token_generation(u).await
    }
    async fn bump_token_generation(&self, u: &UserId) -> Result<u64, ChatStoreError> {
        self.inner.bump_token_generation(u).await
    }
    async fn rooms(&self) -> Result<Vec<RoomRecord>, ChatStoreError> {
        self.inner.rooms().await
    }
    async fn room(&self, id: &ChatRoomId) -> Result<Option<RoomRecord>, ChatStoreError> {
        self.inner.room(id).await
    }
    async fn members(&self, r: &ChatRoomId) -> Result<Vec<(UserId, MemberState)>, ChatStoreError> {
        self.inner.members(r).await
    }
    async fn request_join(
        &self,
        r: &ChatRoomId,
        u: &UserId,
        q: JoinQuotas,
    ) -> Result<(MemberState, MemberState), ChatStoreError> {
        self.hold().await;
        self.inner.request_join(r, u, q).await
    }
    async fn decide_join(&self, r: &ChatRoomId, u: &UserId, a: bool) -> Result<(), ChatStoreError> {
        self.inner.decide_join(r, u, a).await
    }
    async fn remove_member(
        &self,
        r: &ChatRoomId,
        u: &UserId,
        ban: bool,
        max_bans: usize,
    ) -> Result<MemberState, ChatStoreError> {
        self.hold().await;
        self.inner.remove_member(r, u, ban, max_bans).await
    }
    async fn unban(&self, r: &ChatRoomId, u: &UserId) -> Result<bool, ChatStoreError> {
        self.inner.unban(r, u).await
    }
    async fn append_message(&self, r: &ChatRoomId, m: &ChatMessage) -> Result<(), ChatStoreError> {
        self.inner.append_message(r, m).await
    }
    async fn message_page(
        &self,
        r: &ChatRoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, ChatStoreError> {
        self.inner.message_page(r, before, limit).await
    }
    async fn room_page(
        &self,
        v: &UserId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<RoomSummary>, ChatStoreError> {
        self.inner.room_page(v, after, limit).await
    }
    async fn member_page(
        &self,
        r: &ChatRoomId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Page<MemberEntry>, ChatStoreError> {
        self.inner.member_page(r, after, limit).await
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

fn world(limits: ChatLimits) -> (ChatService, Arc<HeldWrites>) {
    let store = Arc::new(HeldWrites {
        inner: MemoryChat::new(),
        barrier: Mutex::new(None),
    });
    let service = ChatService::new(ChatAdapters {
        store: store.clone(),
        events: Arc::new(Quiet),
        tokens: Arc::new(NoTokens),
        ids: Arc::new(SequentialIds::default()),
        voice: Arc::new(MemoryStore::new()),
        clock: Arc::new(ManualClock::default()),
    })
    .with_limits(limits);
    (service, store)
}

fn user(n: &str) -> UserId {
    UserId::parse(n).unwrap()
}

fn quota_refused(r: &Result<impl Sized, ChatError>) -> bool {
    matches!(r, Err(e) if e.code() == "QUOTA_EXCEEDED")
}

#[test]
fn two_simultaneous_creations_cannot_pass_the_room_quota() {
    let (chat, store) = world(ChatLimits {
        rooms_per_user: 2,
        ..ChatLimits::default()
    });
    let ann = user("ann");
    block_on(chat.create_room(&ann, "First")).unwrap();
    // One place left; two requests race for it, both past every read before either writes.
    *store.barrier.lock().unwrap() = Some(Barrier::new(2));
    let results = block_on(join_all([
        chat.create_room(&ann, "Second"),
        chat.create_room(&ann, "Third"),
    ]));
    let won = results.iter().filter(|r| r.is_ok()).count();
    let refused = results.iter().filter(|r| quota_refused(r)).count();
    let held = block_on(store.inner.usage_of(&ann)).unwrap().rooms_admin;
    println!("racing creations: {won} created, {refused} refused, {held} rooms held (quota 2)");
    assert_eq!((won, refused, held), (1, 1, 2), "{results:?}");
}

#[test]
fn two_simultaneous_requests_cannot_pass_the_waiting_quota_of_a_room() {
    let (chat, store) = world(ChatLimits {
        pending_per_room: 1,
        ..ChatLimits::default()
    });
    let room = block_on(chat.create_room(&user("ann"), "Busy")).unwrap();
    *store.barrier.lock().unwrap() = Some(Barrier::new(2));
    let (bo, cy) = (user("bo"), user("cy"));
    let results = block_on(join_all([
        chat.request_join(&bo, &room.id),
        chat.request_join(&cy, &room.id),
    ]));
    let waiting = block_on(store.inner.members(&room.id))
        .unwrap()
        .iter()
        .filter(|(_, s)| *s == MemberState::Pending)
        .count();
    println!("racing requests: {waiting} waiting (quota 1)");
    assert_eq!(waiting, 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| quota_refused(r)).count(), 1);
}

#[test]
fn two_simultaneous_requests_by_one_user_cannot_pass_their_waiting_quota() {
    let (chat, store) = world(ChatLimits {
        pending_per_user: 1,
        ..ChatLimits::default()
    });
    let a = block_on(chat.create_room(&user("ann"), "A")).unwrap();
    let b = block_on(chat.create_room(&user("ann"), "B")).unwrap();
    *store.barrier.lock().unwrap() = Some(Barrier::new(2));
    let eager = user("eager");
    let results = block_on(join_all([
        chat.request_join(&eager, &a.id),
        chat.request_join(&eager, &b.id),
    ]));
    let waiting = block_on(store.inner.usage_of(&eager))
        .unwrap()
        .pending_requests;
    println!("one user's racing requests: {waiting} waiting (quota 1)");
    assert_eq!(waiting, 1, "{results:?}");
}

#[test]
fn two_simultaneous_bans_cannot_pass_the_ban_quota_of_a_room() {
    let (chat, store) = world(ChatLimits {
        bans_per_room: 2,
        ..ChatLimits::default()
    });
    let ann = user("ann");
    let room = block_on(chat.create_room(&ann, "Strict")).unwrap();
    let (bo, cy, di) = (user("bo"), user("cy"), user("di"));
    for (i, u) in [&bo, &cy, &di].into_iter().enumerate() {
        let c = ConnectionId::parse(format!("c{i}")).unwrap();
        block_on(store.inner.bind_connection(&c, u, "Someone")).unwrap();
    }
    block_on(chat.remove_member(&ann, &room.id, &bo, true)).unwrap();
    // One place left; two bans race for it, both past every read before either writes.
    *store.barrier.lock().unwrap() = Some(Barrier::new(2));
    let results = block_on(join_all([
        chat.remove_member(&ann, &room.id, &cy, true),
        chat.remove_member(&ann, &room.id, &di, true),
    ]));
    *store.barrier.lock().unwrap() = None;
    let held = [&bo, &cy, &di]
        .into_iter()
        .filter(|u| {
            block_on(store.inner.request_join(&room.id, u, JoinQuotas::UNLIMITED))
                == Err(ChatStoreError::Banned)
        })
        .count();
    println!("racing bans: {held} bans held (quota 2)");
    assert_eq!(held, 2, "{results:?}");
    assert_eq!(results.iter().filter(|r| quota_refused(r)).count(), 1);
}
