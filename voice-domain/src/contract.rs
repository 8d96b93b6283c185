//! The contract every [`VoiceRoomStore`] must keep, as one suite that each adapter's tests run
//! (memory, SQLite, DynamoDB), so the stores cannot drift apart.
//!
//! Enabled with the `contract-tests` feature. The suite is runtime-agnostic: the caller drives
//! the future (a tokio test for real databases, `block_on` for memory). Each check uses ids under
//! `namespace`, so one store (one table) can serve several runs.

use futures_util::future::join_all;

use crate::ids::{ChannelArn, ChannelName, ChatRoomId, ConnectionId, UserId, VoiceRoomId};
use crate::ports::{StoreError, VoiceRoomStore};
use crate::room::{Capacity, LeaveReason, SignalingChannel, VoiceRoom};
use crate::time::Timestamp;

fn id<T: TryFrom<String>>(s: String) -> T
where
    T::Error: std::fmt::Debug,
{
    T::try_from(s).expect("contract ids are valid")
}

fn channel(ns: &str, n: &str) -> SignalingChannel {
    SignalingChannel {
        name: ChannelName::from_unique(&format!("{ns}-{n}")).expect("valid channel name"),
        arn: id::<ChannelArn>(format!("arn:contract:channel/voice-{ns}-{n}")),
    }
}

/// A fresh active room `room` in chat room `chat`, started by `user` on `conn`.
pub fn sample_room(ns: &str, room: &str, chat: &str, user: &str, conn: &str) -> VoiceRoom {
    VoiceRoom::start(
        id::<VoiceRoomId>(format!("{ns}-{room}")),
        id::<ChatRoomId>(format!("{ns}-{chat}")),
        id::<UserId>(format!("{ns}-{user}")),
        id::<ConnectionId>(format!("{ns}-{conn}")),
        channel(ns, &format!("{room}-{user}")),
        Capacity::default(),
        Timestamp::from_millis(1_700_000_000_000),
    )
    .0
}

/// Runs every check against `store`. Panics (it is test code) with a message naming the broken
/// promise.
pub async fn store_contract<S: VoiceRoomStore>(store: &S, namespace: &str) {
    round_trip(store, namespace).await;
    one_active_room_per_chat_room(store, namespace).await;
    compare_and_set(store, namespace).await;
    ending_frees_the_chat_room(store, namespace).await;
    connection_index_follows_participants(store, namespace).await;
    reconnecting_and_resume_are_kept(store, namespace).await;
    concurrent_starts_yield_one_winner(store, namespace, 24).await;
    recording_state_is_kept(store, namespace).await;
    screen_share_state_is_kept(store, namespace).await;
    active_ids_of_many_chat_rooms_at_once(store, namespace).await;
}

/// `active_ids_in_chat_rooms` names the active room of each chat room asked about that has one
/// (an ended room's chat room, an unknown one and a repeated one included in the question),
/// answers an empty question with an empty map, and takes more ids than one DynamoDB batch
/// (100).
pub async fn active_ids_of_many_chat_rooms_at_once<S: VoiceRoomStore>(store: &S, ns: &str) {
    let a = sample_room(ns, "ids-a", "ids-chat-a", "alice", "c1");
    let mut b = sample_room(ns, "ids-b", "ids-chat-b", "bob", "c2");
    let c = sample_room(ns, "ids-c", "ids-chat-c", "cy", "c3");
    for r in [&a, &b, &c] {
        store.create_if_none_active(r).await.expect("create");
    }
    b.end(
        &id(format!("{ns}-bob")),
        false,
        Timestamp::from_millis(1_700_000_001_000),
    )
    .expect("end");
    b.bump_version();
    store.update(&b).await.expect("end b");
    let mut ask: Vec<ChatRoomId> = (0..103).map(|i| id(format!("{ns}-ids-none-{i}"))).collect();
    ask.insert(50, a.chat_room().clone());
    ask.push(b.chat_room().clone());
    ask.push(c.chat_room().clone());
    ask.push(a.chat_room().clone());
    let got = store
        .active_ids_in_chat_rooms(&ask)
        .await
        .expect("active_ids_in_chat_rooms");
    let want = std::collections::HashMap::from([
        (a.chat_room().clone(), a.id().clone()),
        (c.chat_room().clone(), c.id().clone()),
    ]);
    assert_eq!(
        got, want,
        "the active rooms of the chat rooms asked about, and only those"
    );
    assert!(
        store
            .active_ids_in_chat_rooms(&[])
            .await
            .expect("empty question")
            .is_empty(),
        "no chat rooms, no answers"
    );
}

/// A room's screen-share policy and running share are read back as written, and both are gone
/// (policy back to `anyone` only if set so) once the share stops with the room's end.
pub async fn screen_share_state_is_kept<S: VoiceRoomStore>(store: &S, ns: &str) {
    let t = |ms: u64| Timestamp::from_millis(1_700_000_000_000 + ms);
    let mut room = sample_room(ns, "scr", "scr-chat", "alice", "scr-c1");
    store.create_if_none_active(&room).await.expect("create");
    let alice: UserId = id(format!("{ns}-alice"));
    room.set_screen_share_policy(
        &alice,
        false,
        crate::screen::ScreenSharePolicy::Hosts,
        false,
    )
    .expect("set policy");
    room.start_screen_share(&alice, false, t(100))
        .expect("start sharing");
    room.bump_version();
    store.update(&room).await.expect("update screen share");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert_eq!(read, room, "the policy and the running share are read back");
    assert_eq!(
        read.screen_share().map(|s| &s.by),
        Some(&alice),
        "still sharing after a read"
    );
    room.end(&alice, false, t(200)).expect("end");
    room.bump_version();
    store.update(&room).await.expect("update ended");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert_eq!(read, room, "the ended room is read back");
    assert!(
        read.screen_share().is_none(),
        "the share stopped with the room"
    );
}

/// A room's recording (running, then stopped with the room's end) is read back as written.
pub async fn recording_state_is_kept<S: VoiceRoomStore>(store: &S, ns: &str) {
    let t = |ms: u64| Timestamp::from_millis(1_700_000_000_000 + ms);
    let mut room = sample_room(ns, "rec", "rec-chat", "alice", "rec-c1");
    store.create_if_none_active(&room).await.expect("create");
    let alice: UserId = id(format!("{ns}-alice"));
    let rec = crate::recording::RecordingId::from_unique(&format!("{ns}-1"));
    room.start_recording(&alice, false, rec, t(100))
        .expect("start recording");
    room.bump_version();
    store.update(&room).await.expect("update recording");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert_eq!(read, room, "a running recording is read back");
    assert!(read.is_recording(), "still recording after a read");
    room.end(&alice, false, t(200)).expect("end");
    room.bump_version();
    store.update(&room).await.expect("update ended");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert_eq!(read, room, "the stopped recording is read back");
    assert!(!read.is_recording() && read.recording().is_some());
}

/// What is stored is what is read back, participants and all.
pub async fn round_trip<S: VoiceRoomStore>(store: &S, ns: &str) {
    let mut room = sample_room(ns, "rt", "rt-chat", "alice", "c1");
    store.create_if_none_active(&room).await.expect("create");
    assert_eq!(
        store.get(room.id()).await.expect("get").as_ref(),
        Some(&room),
        "get after create"
    );
    room.join(
        id(format!("{ns}-bob")),
        id(format!("{ns}-c2")),
        channel(ns, "rt-bob"),
        Timestamp::from_millis(1_700_000_000_500),
    )
    .expect("join");
    room.set_muted(&id(format!("{ns}-bob")), true)
        .expect("mute");
    room.bump_version();
    store.update(&room).await.expect("update");
    assert_eq!(
        store.get(room.id()).await.expect("get").as_ref(),
        Some(&room),
        "get after update"
    );
    assert_eq!(
        store
            .get(&id(format!("{ns}-missing")))
            .await
            .expect("get missing"),
        None,
        "an unknown room reads as None"
    );
}

/// A second active room for the same chat room is refused with the first one's id.
pub async fn one_active_room_per_chat_room<S: VoiceRoomStore>(store: &S, ns: &str) {
    let first = sample_room(ns, "one-a", "one-chat", "alice", "c1");
    let second = sample_room(ns, "one-b", "one-chat", "bob", "c2");
    store
        .create_if_none_active(&first)
        .await
        .expect("first create");
    match store.create_if_none_active(&second).await {
        Err(StoreError::AlreadyActive { existing }) => assert_eq!(&existing, first.id()),
        other => panic!("second active room must be refused with AlreadyActive, got {other:?}"),
    }
    assert_eq!(
        store.get(second.id()).await.expect("get"),
        None,
        "the refused room is not stored"
    );
    let active = store
        .active_in_chat_room(first.chat_room())
        .await
        .expect("active_in_chat_room");
    assert_eq!(active.as_ref().map(VoiceRoom::id), Some(first.id()));
    let listed = store.list_active().await.expect("list_active");
    assert!(
        listed.iter().any(|r| r.id() == first.id()),
        "list_active includes the room"
    );
}

/// Updates need the version that was read; stale or unknown rooms are refused.
pub async fn compare_and_set<S: VoiceRoomStore>(store: &S, ns: &str) {
    let room = sample_room(ns, "cas", "cas-chat", "alice", "c1");
    store.create_if_none_active(&room).await.expect("create");
    let mut a = room.clone();
    a.set_muted(&id(format!("{ns}-alice")), true).expect("mute");
    a.bump_version();
    let mut b = room.clone();
    b.set_muted(&id(format!("{ns}-alice")), false).ok();
    b.bump_version();
    store.update(&a).await.expect("first writer wins");
    assert_eq!(
        store.update(&b).await,
        Err(StoreError::VersionConflict),
        "a writer with a stale version must get VersionConflict"
    );
    assert_eq!(
        store.get(room.id()).await.expect("get"),
        Some(a.clone()),
        "the loser changed nothing"
    );
    let mut skip = a.clone();
    skip.bump_version();
    skip.bump_version();
    assert_eq!(
        store.update(&skip).await,
        Err(StoreError::VersionConflict),
        "versions cannot skip"
    );
    let mut ghost = sample_room(ns, "cas-ghost", "cas-ghost-chat", "alice", "c9");
    ghost.bump_version();
    assert_eq!(
        store.update(&ghost).await,
        Err(StoreError::NotFound),
        "update of an unknown room"
    );
}

/// Ending a room removes it from the active views and lets a new room start.
pub async fn ending_frees_the_chat_room<S: VoiceRoomStore>(store: &S, ns: &str) {
    let mut room = sample_room(ns, "end", "end-chat", "alice", "c1");
    store.create_if_none_active(&room).await.expect("create");
    room.end(
        &id(format!("{ns}-alice")),
        false,
        Timestamp::from_millis(1_700_000_001_000),
    )
    .expect("end");
    room.bump_version();
    store.update(&room).await.expect("update to ended");
    assert_eq!(
        store
            .active_in_chat_room(room.chat_room())
            .await
            .expect("active"),
        None
    );
    assert!(!store
        .list_active()
        .await
        .expect("list")
        .iter()
        .any(|r| r.id() == room.id()));
    let stored = store
        .get(room.id())
        .await
        .expect("get")
        .expect("ended rooms stay readable");
    assert!(!stored.is_active());
    let next = sample_room(ns, "end-2", "end-chat", "bob", "c2");
    store
        .create_if_none_active(&next)
        .await
        .expect("a new room may start once the old one ended");
}

/// `active_with_connection` finds rooms by a participant's connection, and forgets them when
/// the participant leaves.
pub async fn connection_index_follows_participants<S: VoiceRoomStore>(store: &S, ns: &str) {
    let mut room = sample_room(ns, "idx", "idx-chat", "alice", "idx-c1");
    store.create_if_none_active(&room).await.expect("create");
    room.join(
        id(format!("{ns}-bob")),
        id(format!("{ns}-idx-c2")),
        channel(ns, "idx-bob"),
        Timestamp::from_millis(1_700_000_000_100),
    )
    .expect("join");
    room.bump_version();
    store.update(&room).await.expect("update");
    let bob_conn: ConnectionId = id(format!("{ns}-idx-c2"));
    let found = store
        .active_with_connection(&bob_conn)
        .await
        .expect("by connection");
    assert_eq!(
        found.iter().map(VoiceRoom::id).collect::<Vec<_>>(),
        vec![room.id()]
    );
    room.leave(
        &id(format!("{ns}-bob")),
        LeaveReason::Left,
        Timestamp::from_millis(1_700_000_000_200),
    )
    .expect("leave");
    room.bump_version();
    store.update(&room).await.expect("update");
    assert!(store
        .active_with_connection(&bob_conn)
        .await
        .expect("by connection")
        .is_empty());
    assert!(store
        .active_with_connection(&id(format!("{ns}-nobody")))
        .await
        .expect("by connection")
        .is_empty());
}

/// A participant marked reconnecting is stored as such (and still found by its old
/// connection, so a repeated `$disconnect` is a no-op); after a resume from a new connection
/// the index names only the new one, and a restart's "everyone reconnecting" survives a read.
/// A stale writer cannot overwrite a resume (compare-and-set).
pub async fn reconnecting_and_resume_are_kept<S: VoiceRoomStore>(store: &S, ns: &str) {
    let t = |ms: u64| Timestamp::from_millis(1_700_000_000_000 + ms);
    let mut room = sample_room(ns, "rs", "rs-chat", "alice", "rs-c1");
    store.create_if_none_active(&room).await.expect("create");
    let bob: UserId = id(format!("{ns}-bob"));
    let (old, new): (ConnectionId, ConnectionId) =
        (id(format!("{ns}-rs-c2")), id(format!("{ns}-rs-c3")));
    room.join(bob.clone(), old.clone(), channel(ns, "rs-bob"), t(100))
        .expect("join");
    room.set_muted(&bob, true).expect("mute");
    room.bump_version();
    store.update(&room).await.expect("update");

    room.mark_reconnecting(&old, t(200))
        .expect("mark")
        .expect("bob was connected");
    room.bump_version();
    store.update(&room).await.expect("update reconnecting");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert_eq!(read, room, "reconnecting state read back");
    assert_eq!(
        read.participant(&bob).and_then(|p| p.reconnecting_since),
        Some(t(200)),
        "reconnecting since"
    );
    assert_eq!(
        store
            .active_with_connection(&old)
            .await
            .expect("by connection")
            .len(),
        1,
        "a reconnecting participant is still found by its old connection"
    );

    let stale = room.clone();
    room.join(bob.clone(), new.clone(), channel(ns, "rs-unused"), t(300))
        .expect("resume");
    room.bump_version();
    store.update(&room).await.expect("update resumed");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert_eq!(read, room, "resume read back");
    let p = read.participant(&bob).expect("bob");
    assert!(
        p.connection == new && !p.is_reconnecting() && p.muted,
        "resumed on the new connection, mute kept"
    );
    assert!(store
        .active_with_connection(&old)
        .await
        .expect("by connection")
        .is_empty());
    assert_eq!(
        store
            .active_with_connection(&new)
            .await
            .expect("by connection")
            .len(),
        1
    );
    let mut late = stale;
    late.bump_version();
    assert_eq!(
        store.update(&late).await,
        Err(StoreError::VersionConflict),
        "a write based on the pre-resume version must not land"
    );

    room.mark_all_reconnecting(t(400));
    room.bump_version();
    store.update(&room).await.expect("update restarted");
    let read = store.get(room.id()).await.expect("get").expect("stored");
    assert!(read
        .participants()
        .iter()
        .all(|p| p.reconnecting_since == Some(t(400))));
    assert_eq!(
        store
            .list_active()
            .await
            .expect("list")
            .iter()
            .find(|r| r.id() == room.id()),
        Some(&room),
        "list_active returns the reconnecting state too"
    );
}

/// `n` starts racing for one chat room: exactly one wins, the others learn its id.
pub async fn concurrent_starts_yield_one_winner<S: VoiceRoomStore>(store: &S, ns: &str, n: usize) {
    let rooms: Vec<_> = (0..n)
        .map(|i| {
            sample_room(
                ns,
                &format!("race-{i}"),
                "race-chat",
                &format!("u{i}"),
                &format!("rc{i}"),
            )
        })
        .collect();
    let results = join_all(rooms.iter().map(|r| store.create_if_none_active(r))).await;
    let winners: Vec<_> = rooms
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(room, _)| room.id().clone())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent start must win: {results:?}"
    );
    for r in &results {
        match r {
            Ok(()) => {}
            Err(StoreError::AlreadyActive { existing }) => {
                assert_eq!(existing, &winners[0], "losers must be told the winner's id")
            }
            Err(e) => panic!("a losing start must get AlreadyActive, got {e:?}"),
        }
    }
}

/// Runs every check of the [`ChannelPool`](crate::pool::ChannelPool) contract against `pool`,
/// which must be empty (a claim takes any free channel, so runs cannot share a pool). Panics
/// with a message naming the broken promise.
pub async fn pool_contract<P: crate::pool::ChannelPool>(pool: &P, ns: &str) {
    use crate::pool::{ChannelLease, LeaseHolder, PoolError, PoolSlot};

    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let holder = |room: &str, user: &str| LeaseHolder {
        voice_room: id::<VoiceRoomId>(format!("{ns}-{room}")),
        user: id::<UserId>(format!("{ns}-{user}")),
    };
    let slot_of = |list: &[crate::pool::PooledChannel], ch: &SignalingChannel| {
        list.iter()
            .find(|p| p.channel == *ch)
            .map(|p| p.slot.clone())
    };
    assert!(pool.is_pooling(), "a pool under contract keeps channels");
    assert!(pool.list().await.expect("list").is_empty(), "start empty");
    assert_eq!(
        pool.claim(&holder("r1", "a"), t0).await.expect("claim"),
        None,
        "an empty pool has nothing to claim"
    );

    // add → held; a held channel is not claimable.
    let ch1 = channel(ns, "p1");
    let a = holder("r1", "a");
    let lease = ChannelLease {
        channel: ch1.clone(),
        holder: a.clone(),
        claimed_at: t0,
    };
    pool.add(&lease).await.expect("add");
    assert_eq!(
        slot_of(&pool.list().await.expect("list"), &ch1),
        Some(PoolSlot::Held {
            holder: a.clone(),
            claimed_at: t0
        })
    );
    assert_eq!(
        pool.claim(&holder("r2", "b"), t0).await.expect("claim"),
        None
    );

    // release only by the holding room, once.
    let q = std::time::Duration::from_secs(7_260);
    let (released_at, free_from) = (t0.plus(q / 10), t0.plus(q));
    assert_eq!(
        pool.release(&ch1, &holder("r2", "b").voice_room, released_at, free_from)
            .await,
        Err(PoolError::NotHeld),
        "another room cannot release it"
    );
    pool.release(&ch1, &a.voice_room, released_at, free_from)
        .await
        .expect("release");
    assert_eq!(
        pool.release(&ch1, &a.voice_room, released_at, free_from)
            .await,
        Err(PoolError::NotHeld),
        "a second release changes nothing"
    );
    assert_eq!(
        slot_of(&pool.list().await.expect("list"), &ch1),
        Some(PoolSlot::Free {
            released_at,
            free_from
        })
    );

    // quarantine: not claimable a millisecond before free_from, claimable at it.
    let before = Timestamp::from_millis(free_from.as_millis() - 1);
    assert_eq!(
        pool.claim(&holder("r2", "b"), before).await.expect("claim"),
        None,
        "claimed in quarantine"
    );
    let b = holder("r2", "b");
    let (got, was) = pool
        .claim(&b, free_from)
        .await
        .expect("claim")
        .expect("claimable once the quarantine is over");
    assert_eq!(got.channel, ch1);
    assert_eq!(got.holder, b);
    assert_eq!(
        was,
        PoolSlot::Free {
            released_at,
            free_from
        }
    );
    assert_eq!(
        slot_of(&pool.list().await.expect("list"), &ch1),
        Some(PoolSlot::Held {
            holder: b.clone(),
            claimed_at: free_from
        })
    );

    // evict: never a held channel, only a free one released when the caller saw it released.
    assert!(
        !pool.evict(&ch1, released_at).await.expect("evict"),
        "evicted a held channel"
    );
    let later = free_from.plus(q);
    pool.release(&ch1, &b.voice_room, later, later)
        .await
        .expect("release");
    assert!(
        !pool.evict(&ch1, released_at).await.expect("evict"),
        "evicted with a stale release time (a claim and release came in between)"
    );
    assert!(pool.evict(&ch1, later).await.expect("evict"));
    assert!(
        pool.list().await.expect("list").is_empty(),
        "evicted but listed"
    );

    // The most recently freed claimable channel is claimed first, so that surplus channels
    // stay idle and the sweep can delete them.
    let now = later.plus(q);
    for (i, n) in ["p2", "p3", "p4"].iter().enumerate() {
        let h = holder(&format!("r{n}"), "c");
        pool.add(&ChannelLease {
            channel: channel(ns, n),
            holder: h.clone(),
            claimed_at: later,
        })
        .await
        .expect("add");
        let freed = later.plus(std::time::Duration::from_secs(i as u64 + 1));
        pool.release(&channel(ns, n), &h.voice_room, freed, freed)
            .await
            .expect("release");
    }
    let (first, _) = pool
        .claim(&holder("r5", "d"), now)
        .await
        .expect("claim")
        .expect("three are free");
    assert_eq!(
        first.channel,
        channel(ns, "p4"),
        "not the most recently freed"
    );

    // find + claim_found: the find is a read (the same candidate as a claim would take, and
    // nothing changes); claim_found takes exactly that channel, once.
    let found = pool.find(now).await.expect("find").expect("two are free");
    assert_eq!(found, channel(ns, "p3").arn, "not the most recently freed");
    assert_eq!(
        pool.find(now).await.expect("find"),
        Some(found.clone()),
        "a find changed the pool"
    );
    let f = holder("rf", "f");
    let (got, was) = pool
        .claim_found(&found, &f, now)
        .await
        .expect("claim_found")
        .expect("the found channel is still free");
    assert_eq!(got.channel, channel(ns, "p3"));
    assert_eq!(got.holder, f);
    assert!(matches!(was, PoolSlot::Free { .. }), "{was:?}");
    assert_eq!(
        slot_of(&pool.list().await.expect("list"), &channel(ns, "p3")),
        Some(PoolSlot::Held {
            holder: f.clone(),
            claimed_at: now
        })
    );
    assert_eq!(
        pool.claim_found(&found, &holder("rg", "g"), now)
            .await
            .expect("claim_found"),
        None,
        "a found channel claimed twice (the second claim lost the race and must get nothing)"
    );
    assert_eq!(
        pool.claim_found(&channel(ns, "never-pooled").arn, &holder("rg", "g"), now)
            .await
            .expect("claim_found"),
        None,
        "claimed a channel the pool does not have"
    );
    // Not in quarantine, nor held: released now, free only later.
    let q_end = now.plus(q);
    pool.release(&channel(ns, "p3"), &f.voice_room, now, q_end)
        .await
        .expect("release");
    assert_eq!(
        pool.claim_found(&channel(ns, "p3").arn, &holder("rg", "g"), now)
            .await
            .expect("claim_found"),
        None,
        "claim_found took a channel in quarantine"
    );
    assert_eq!(
        pool.find(now).await.expect("find"),
        Some(channel(ns, "p2").arn),
        "found a channel in quarantine"
    );
    // Concurrent claim_found of one candidate: one winner.
    let claimants: Vec<_> = (0..4).map(|i| holder(&format!("rh{i}"), "h")).collect();
    let p2 = channel(ns, "p2").arn;
    let results = join_all(claimants.iter().map(|h| pool.claim_found(&p2, h, now))).await;
    let winners = results
        .into_iter()
        .filter(|r| matches!(r, Ok(Some(_))))
        .count();
    assert_eq!(winners, 1, "concurrent claim_found overlapped");
    // Back as they were for the next check: p2 free now, p3 free once out of quarantine.
    let (winner, _) = pool
        .list()
        .await
        .expect("list")
        .into_iter()
        .find(|p| p.channel == channel(ns, "p2"))
        .and_then(|p| match p.slot {
            PoolSlot::Held { holder, claimed_at } => Some((holder, claimed_at)),
            PoolSlot::Free { .. } => None,
        })
        .expect("p2 held by the winner");
    pool.release(&channel(ns, "p2"), &winner.voice_room, now, now)
        .await
        .expect("release");
    let now = q_end;
    assert_eq!(
        pool.find(now).await.expect("find"),
        Some(channel(ns, "p3").arn),
        "p3 is out of quarantine and the most recently freed"
    );

    // Concurrent claims never share a channel: two free, six claimants, two winners.
    let claimants: Vec<_> = (0..6).map(|i| holder(&format!("rc{i}"), "e")).collect();
    let results = join_all(claimants.iter().map(|h| pool.claim(h, now))).await;
    let mut won: Vec<SignalingChannel> = results
        .into_iter()
        .filter_map(|r| r.expect("claim under contention").map(|(l, _)| l.channel))
        .collect();
    won.sort_by(|x, y| x.name.as_str().cmp(y.name.as_str()));
    assert_eq!(
        won,
        vec![channel(ns, "p2"), channel(ns, "p3")],
        "claims overlapped"
    );
}
