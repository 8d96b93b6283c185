//! DynamoStore against moto: CRUD, compare-and-set, the chat lock under concurrency, TTL.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use voice_adapters_aws::store::{attr, lock_key, room_to_item, DEFAULT_ENDED_RETENTION};
use voice_adapters_aws::DynamoStore;
use voice_domain::ports::{StoreError, VoiceRoomStore};
use voice_domain::Timestamp;

use crate::support::*;

fn store(m: &Moto) -> DynamoStore {
    DynamoStore::new(m.dynamodb.clone(), &m.tables.voice_rooms)
}

async fn raw_item(m: &Moto, key: &str) -> Option<HashMap<String, AttributeValue>> {
    m.dynamodb
        .get_item()
        .table_name(&m.tables.voice_rooms)
        .key(attr::ID, AttributeValue::S(key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

/// The one suite the memory and SQLite stores also run, so the three stores cannot drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_store_keeps_the_store_contract() {
    let Some(m) = moto().await else { return };
    voice_domain::contract::store_contract(&store(&m), "dynamo").await;
}

#[tokio::test]
async fn create_get_update_and_queries_round_trip() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    let mut r = room("vr-1", "chat-1", "alice", "c-a");
    store.create_if_none_active(&r).await.unwrap();
    assert_eq!(store.get(&vr("vr-1")).await.unwrap(), Some(r.clone()));
    assert_eq!(store.get(&vr("vr-none")).await.unwrap(), None);
    assert_eq!(
        store.active_in_chat_room(&chat("chat-1")).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        store.active_in_chat_room(&chat("chat-2")).await.unwrap(),
        None
    );

    r.join(
        user("bob"),
        conn("c=b"),
        channel("vr-1-bob"),
        Timestamp::from_millis(T0 + 5),
    )
    .unwrap();
    r.set_muted(&user("bob"), true).unwrap();
    r.bump_version();
    store.update(&r).await.unwrap();
    let stored = store.get(&vr("vr-1")).await.unwrap().unwrap();
    assert_eq!(stored, r);
    assert_eq!(stored.version(), 2);

    assert_eq!(
        store.active_with_connection(&conn("c=b")).await.unwrap(),
        vec![r.clone()]
    );
    assert!(store
        .active_with_connection(&conn("c-x"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.list_active().await.unwrap(), vec![r.clone()]);

    // The original design's fields are there for anyone reading the table by hand.
    let item = raw_item(&m, "vr-1").await.unwrap();
    assert_eq!(item[attr::STATUS].as_s().unwrap(), "active");
    assert_eq!(item[attr::MASTER].as_s().unwrap(), "alice");
    assert_eq!(item[attr::CHAT_ROOM].as_s().unwrap(), "chat-1");
    assert_eq!(item[attr::ACTIVE_PARTICIPANTS].as_l().unwrap().len(), 2);
    assert_eq!(item[attr::CHANNEL_ARNS].as_m().unwrap().len(), 2);
}

#[tokio::test]
async fn stale_versions_conflict_and_unknown_rooms_are_not_found() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    let r = room("vr-1", "chat-1", "alice", "c-a");
    store.create_if_none_active(&r).await.unwrap();

    let mut first = r.clone();
    first.set_muted(&user("alice"), true).unwrap();
    first.bump_version();
    let mut second = r.clone();
    second
        .join(
            user("bob"),
            conn("c-b"),
            channel("b"),
            Timestamp::from_millis(T0 + 1),
        )
        .unwrap();
    second.bump_version();

    store.update(&first).await.unwrap();
    assert_eq!(
        store.update(&second).await,
        Err(StoreError::VersionConflict)
    );
    assert_eq!(store.get(&vr("vr-1")).await.unwrap(), Some(first.clone()));

    // Writing the same version again is a conflict too, not a silent overwrite.
    assert_eq!(store.update(&first).await, Err(StoreError::VersionConflict));

    let mut ghost = room("vr-ghost", "chat-9", "zed", "c-z");
    ghost.bump_version();
    assert_eq!(store.update(&ghost).await, Err(StoreError::NotFound));
    assert_eq!(store.get(&vr("vr-ghost")).await.unwrap(), None);
}

#[tokio::test]
async fn a_second_start_in_the_same_chat_room_names_the_active_room() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    store
        .create_if_none_active(&room("vr-1", "chat-1", "alice", "c-a"))
        .await
        .unwrap();
    assert_eq!(
        store
            .create_if_none_active(&room("vr-2", "chat-1", "bob", "c-b"))
            .await,
        Err(StoreError::AlreadyActive {
            existing: vr("vr-1")
        })
    );
    assert_eq!(
        store.get(&vr("vr-2")).await.unwrap(),
        None,
        "the loser wrote nothing"
    );
    // Another chat room is independent.
    store
        .create_if_none_active(&room("vr-3", "chat-2", "bob", "c-b"))
        .await
        .unwrap();
    // Re-creating an existing room id is refused as a conflict.
    assert_eq!(
        store
            .create_if_none_active(&room("vr-3", "chat-3", "bob", "c-b"))
            .await,
        Err(StoreError::VersionConflict)
    );
}

#[tokio::test]
async fn ending_releases_the_lock_and_sets_the_ttl() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    let mut r = room("vr-1", "chat-1", "alice", "c-a");
    store.create_if_none_active(&r).await.unwrap();
    assert!(raw_item(&m, &lock_key(&chat("chat-1"))).await.is_some());

    let ended_at = Timestamp::from_millis(T0 + 60_000);
    r.end(&user("alice"), false, ended_at).unwrap();
    r.bump_version();
    store.update(&r).await.unwrap();

    assert_eq!(
        store.active_in_chat_room(&chat("chat-1")).await.unwrap(),
        None
    );
    assert!(
        raw_item(&m, &lock_key(&chat("chat-1"))).await.is_none(),
        "lock deleted"
    );
    assert!(store.list_active().await.unwrap().is_empty());
    assert!(store
        .active_with_connection(&conn("c-a"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get(&vr("vr-1")).await.unwrap(), Some(r.clone()));

    let item = raw_item(&m, "vr-1").await.unwrap();
    let expected = ended_at.plus(DEFAULT_ENDED_RETENTION).as_secs();
    assert_eq!(
        item[attr::EXPIRES_AT].as_n().unwrap(),
        &expected.to_string()
    );
    assert_eq!(item[attr::STATUS].as_s().unwrap(), "ended");
    assert!(!item.contains_key(attr::CONNECTION_IDS));

    // The chat room is free again.
    store
        .create_if_none_active(&room("vr-2", "chat-1", "bob", "c-b"))
        .await
        .unwrap();
    assert_eq!(
        store
            .active_in_chat_room(&chat("chat-1"))
            .await
            .unwrap()
            .map(|r| r.id().clone()),
        Some(vr("vr-2"))
    );
}

#[tokio::test]
async fn ending_does_not_release_a_lock_held_by_another_room() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    let mut old = room("vr-old", "chat-1", "alice", "c-a");
    store.create_if_none_active(&old).await.unwrap();
    // Simulate an inconsistent table: the lock names another room.
    m.dynamodb
        .put_item()
        .table_name(&m.tables.voice_rooms)
        .item(attr::ID, AttributeValue::S(lock_key(&chat("chat-1"))))
        .item(attr::ITEM_TYPE, AttributeValue::S("chatLock".into()))
        .item(attr::LOCK_HOLDER, AttributeValue::S("vr-other".into()))
        .send()
        .await
        .unwrap();
    old.end(&user("alice"), false, Timestamp::from_millis(T0 + 1))
        .unwrap();
    old.bump_version();
    store.update(&old).await.unwrap();
    assert!(!store.get(&vr("vr-old")).await.unwrap().unwrap().is_active());
    let lock = raw_item(&m, &lock_key(&chat("chat-1"))).await.unwrap();
    assert_eq!(lock[attr::LOCK_HOLDER].as_s().unwrap(), "vr-other");
}

#[tokio::test]
async fn fifty_concurrent_starts_make_exactly_one_room() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = room(
                    &format!("vr-{i}"),
                    "chat-busy",
                    &format!("u{i}"),
                    &format!("c{i}"),
                );
                (r.id().clone(), store.create_if_none_active(&r).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(())) => winners.push(id),
            (id, Err(StoreError::AlreadyActive { existing })) => losers.push((id, existing)),
            (id, Err(e)) => panic!("{id}: unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one start wins: {winners:?}");
    assert_eq!(losers.len(), 49);
    let winner = &winners[0];
    assert!(losers.iter().all(|(_, existing)| existing == winner));
    assert_eq!(
        store
            .active_in_chat_room(&chat("chat-busy"))
            .await
            .unwrap()
            .map(|r| r.id().clone()),
        Some(winner.clone())
    );
    let listed = store.list_active().await.unwrap();
    assert_eq!(listed.len(), 1, "no loser left a room item behind");
    for (loser, _) in &losers {
        assert_eq!(store.get(loser).await.unwrap(), None);
    }
}

#[tokio::test]
async fn lock_items_are_invisible_to_get_and_list() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    store
        .create_if_none_active(&room("vr-1", "chat-1", "alice", "c-a"))
        .await
        .unwrap();
    store
        .create_if_none_active(&room("vr-2", "chat-2", "bob", "c-b"))
        .await
        .unwrap();
    let raw = m
        .dynamodb
        .scan()
        .table_name(&m.tables.voice_rooms)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.count, 4, "two rooms and two locks in the table");
    assert_eq!(
        store.get(&vr(&lock_key(&chat("chat-1")))).await.unwrap(),
        None
    );
    let mut ids: Vec<_> = store
        .list_active()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["vr-1", "vr-2"]);
    // A room id with the lock prefix is refused rather than colliding with a lock.
    assert!(matches!(
        store
            .create_if_none_active(&room("lock#chat#chat-3", "chat-3", "carol", "c-c"))
            .await,
        Err(StoreError::Unavailable(f)) if !f.retryable
    ));
}

#[tokio::test]
async fn corrupt_items_are_reported_by_get_and_skipped_by_scans() {
    let Some(m) = moto().await else { return };
    let store = store(&m);
    let good = room("vr-good", "chat-1", "alice", "c-a");
    store.create_if_none_active(&good).await.unwrap();
    let mut bad = room_to_item(
        &room("vr-bad", "chat-2", "bob", "c-a"),
        Duration::from_secs(60),
    );
    bad.insert(attr::MASTER.into(), AttributeValue::S("nobody".into()));
    m.dynamodb
        .put_item()
        .table_name(&m.tables.voice_rooms)
        .set_item(Some(bad))
        .send()
        .await
        .unwrap();
    assert!(matches!(
        store.get(&vr("vr-bad")).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.list_active().await.unwrap(), vec![good.clone()]);
    assert_eq!(
        store.active_with_connection(&conn("c-a")).await.unwrap(),
        vec![good]
    );
}

#[tokio::test]
async fn an_unreachable_table_is_a_port_failure() {
    let Some(m) = moto().await else { return };
    let store = DynamoStore::new(m.dynamodb.clone(), "NoSuchTable");
    match store.get(&vr("vr-1")).await {
        Err(StoreError::Unavailable(f)) => {
            assert!(!f.retryable, "{f:?}");
            assert!(
                f.message.contains("ResourceNotFoundException"),
                "{}",
                f.message
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
