//! DynamoChat against moto: the chat store contract (the suite the memory and SQLite chats
//! run), voice's `DynamoDirectory` agreeing with it on the same tables, the message window and
//! connection expiry.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chat_domain::{ChatMessage, ChatStore, ChatStoreError, RoomRecord, MESSAGE_HISTORY};
use voice_adapters_aws::chat_store::{attr, CONNECTION_LIFETIME};
use voice_adapters_aws::testing::{create_chat_tables, CONNECTIONS_BY_USER_INDEX};
use voice_adapters_aws::{ChatTables, DynamoChat, DynamoDirectory};
use voice_domain::ports::{ChatDirectory, MemberState};

use crate::support::*;

/// Moto with the voice tables of `support::moto` plus the built-in chat's tables, as
/// deploy/aws/template.yaml creates them.
async fn chat_moto() -> Option<(Moto, ChatTables)> {
    let m = moto().await?;
    let tables = create_chat_tables(&m.dynamodb, &m.tables)
        .await
        .expect("chat tables");
    Some((m, tables))
}

fn record(id: &str, name: &str, admin: &str) -> RoomRecord {
    RoomRecord {
        id: chat(id),
        name: name.into(),
        admin: user(admin),
    }
}

/// The one suite the memory and SQLite chat stores also run, so the three cannot drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_chat_keeps_the_chat_store_contract() {
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let store = DynamoChat::new(m.dynamodb.clone(), tables);
    chat_domain::contract::run_all(&store, "dynamo").await;
}

/// Builtin mode writes what existing mode reads: `DynamoDirectory` over the same tables (with
/// the same schema; by scan and by the user-id index) answers exactly as the store does after
/// hellos, a room, an approval, a pending request, a ban and a disconnect.
#[tokio::test]
async fn the_existing_mode_reader_agrees_with_the_builtin_store() {
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let store = DynamoChat::new(m.dynamodb.clone(), tables.clone());
    let r = chat("room-1");
    store
        .create_room(&record("room-1", "Friends", "ada"), usize::MAX)
        .await
        .unwrap();
    for (c, u, name) in [
        ("c-ada=", "ada", "Ada"),
        ("c-bob-1", "bob", "Bob"),
        ("c-bob-2", "bob", "Bob"),
        ("c-cy", "cy", "Cy"),
        ("c-eve", "eve", "Eve"),
        ("c-dan", "dan", "Dan"),
    ] {
        store
            .bind_connection(&conn(c), &user(u), name)
            .await
            .unwrap();
    }
    store
        .request_join(&r, &user("bob"), chat_domain::JoinQuotas::UNLIMITED)
        .await
        .unwrap();
    store.decide_join(&r, &user("bob"), true).await.unwrap();
    store
        .request_join(&r, &user("cy"), chat_domain::JoinQuotas::UNLIMITED)
        .await
        .unwrap();
    store
        .request_join(&r, &user("dan"), chat_domain::JoinQuotas::UNLIMITED)
        .await
        .unwrap();
    store
        .remove_member(&r, &user("dan"), true, usize::MAX)
        .await
        .unwrap();
    store.unbind_connection(&conn("c-bob-2")).await.unwrap();

    let by_scan = DynamoDirectory::new(m.dynamodb.clone(), tables.directory.clone());
    let mut indexed_schema = tables.directory.clone();
    indexed_schema.connections_by_user_index = Some(CONNECTIONS_BY_USER_INDEX.to_owned());
    let by_index = DynamoDirectory::new(m.dynamodb.clone(), indexed_schema);

    let want_conns = vec![conn("c-ada="), conn("c-bob-1")];
    assert_eq!(store.connections_of(&r).await.unwrap(), want_conns);
    for reader in [&by_scan, &by_index] {
        for c in ["c-ada=", "c-bob-1", "c-bob-2", "c-cy", "c-eve", "c-none"] {
            assert_eq!(
                reader.user_of(&conn(c)).await.unwrap(),
                store.user_of(&conn(c)).await.unwrap(),
                "user_of {c}"
            );
        }
        for u in ["ada", "bob", "cy", "dan", "eve"] {
            assert_eq!(
                reader.membership(&r, &user(u)).await.unwrap(),
                store.membership(&r, &user(u)).await.unwrap(),
                "membership of {u}"
            );
        }
        assert_eq!(
            reader
                .membership(&chat("room-x"), &user("ada"))
                .await
                .unwrap(),
            None
        );
        let mut conns = reader.connections_of(&r).await.unwrap();
        conns.sort();
        assert_eq!(conns, want_conns);
    }
    // And both say what the chat means.
    let states: HashMap<_, _> = store.members(&r).await.unwrap().into_iter().collect();
    assert_eq!(states.get(&user("bob")), Some(&MemberState::Approved));
    assert_eq!(states.get(&user("cy")), Some(&MemberState::Pending));
    assert_eq!(states.get(&user("dan")), None, "banned, not a member");
}

/// With the window at the contract's minimum, the oldest messages are deleted as new ones
/// come, and the history still holds the last `MESSAGE_HISTORY`.
#[tokio::test]
async fn messages_beyond_the_window_are_deleted() {
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let store = DynamoChat::new(m.dynamodb.clone(), tables.clone())
        .with_message_retention(MESSAGE_HISTORY as u64);
    let r = chat("room-m");
    store
        .create_room(&record("room-m", "Talk", "ada"), usize::MAX)
        .await
        .unwrap();
    let total = MESSAGE_HISTORY + 5;
    for i in 0..total {
        let msg = ChatMessage {
            room_id: r.to_string(),
            user_id: "ada".into(),
            name: "Ada".into(),
            text: format!("m{i}"),
            at: T0 + i as u64,
        };
        store.append_message(&r, &msg).await.unwrap();
    }
    let stored = m
        .dynamodb
        .query()
        .table_name(&tables.messages_table)
        .key_condition_expression("#r = :r")
        .expression_attribute_names("#r", attr::ROOM_ID)
        .expression_attribute_values(":r", AttributeValue::S(r.to_string()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        stored.count as usize,
        MESSAGE_HISTORY + 1,
        "the window plus the room's counter item"
    );
    let texts: Vec<String> = store
        .message_page(&r, None, MESSAGE_HISTORY + 50)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message.text)
        .collect();
    let want: Vec<String> = (5..total).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
}

/// A connection item carries `expiresAt` (DynamoDB's TTL removes what a lost `$disconnect`
/// left); an expired entry, still there because TTL deletes lazily, counts for nobody.
#[tokio::test]
async fn connections_expire_after_the_api_gateway_limit() {
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let store = DynamoChat::new(m.dynamodb.clone(), tables.clone());
    store
        .bind_connection(&conn("c-1"), &user("ann"), "Ann")
        .await
        .unwrap();
    let item = m
        .dynamodb
        .get_item()
        .table_name(&tables.directory.connections_table)
        .key("connectionId", AttributeValue::S("c-1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires: u64 = item[attr::EXPIRES_AT].as_n().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lifetime = CONNECTION_LIFETIME.as_secs();
    assert!(
        expires > now + lifetime - 60 && expires <= now + lifetime + 1,
        "{expires}"
    );

    // A connection whose $disconnect never came, past its expiry but not yet deleted.
    let past = AttributeValue::N((now - 10).to_string());
    m.dynamodb
        .put_item()
        .table_name(&tables.directory.connections_table)
        .item("connectionId", AttributeValue::S("c-old".into()))
        .item("userId", AttributeValue::S("ann".into()))
        .item(attr::EXPIRES_AT, past.clone())
        .send()
        .await
        .unwrap();
    m.dynamodb
        .update_item()
        .table_name(&tables.users_table)
        .key(attr::USER_ID, AttributeValue::S("ann".into()))
        .update_expression("SET #conns.#c = :past")
        .expression_attribute_names("#conns", attr::CONNECTIONS)
        .expression_attribute_names("#c", "c-old")
        .expression_attribute_values(":past", past)
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.connections_of_user(&user("ann")).await.unwrap(),
        vec![conn("c-1")]
    );
    assert_eq!(
        store.identified_connections().await.unwrap(),
        vec![conn("c-1")]
    );
    // The reader pruned the expired entry; the live one is untouched.
    let user_item = m
        .dynamodb
        .get_item()
        .table_name(&tables.users_table)
        .key(attr::USER_ID, AttributeValue::S("ann".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let map = user_item[attr::CONNECTIONS].as_m().unwrap();
    assert!(
        map.contains_key("c-1") && !map.contains_key("c-old"),
        "{map:?}"
    );

    // A connection moving to another user (a second hello) leaves the first user's map.
    store
        .bind_connection(&conn("c-1"), &user("bo"), "Bo")
        .await
        .unwrap();
    assert!(store
        .connections_of_user(&user("ann"))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.user_of(&conn("c-1")).await.unwrap(), Some(user("bo")));
}

/// A room id that collides with the name items' key space is refused, and a missing table
/// is a permanent failure, not a wrong answer.
#[tokio::test]
async fn reserved_ids_and_missing_tables_fail_plainly() {
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let store = DynamoChat::new(m.dynamodb.clone(), tables.clone());
    match store
        .create_room(&record("name#x", "X", "ada"), usize::MAX)
        .await
    {
        Err(ChatStoreError::Unavailable(f)) => assert!(!f.retryable, "{f:?}"),
        other => panic!("{other:?}"),
    }
    let mut broken = tables;
    broken.users_table = "NoSuchTable".into();
    match DynamoChat::new(m.dynamodb.clone(), broken)
        .user_name(&user("ann"))
        .await
    {
        Err(ChatStoreError::Unavailable(f)) => {
            assert!(!f.retryable, "{f:?}");
            assert!(f.message.contains("dynamodb:GetItem"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
}

/// What a fake DynamoDB answers per operation (`X-Amz-Target`), in the JSON 1.0 error shape
/// the SDK parses (`__type` with the service's namespace, HTTP status).
async fn fake_dynamodb(headers: axum::http::HeaderMap) -> axum::response::Response {
    use axum::response::IntoResponse;
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let op = target.rsplit('.').next().unwrap_or("");
    let (status, body) = match op {
        "GetItem" => (
            400,
            serde_json::json!({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "Rate of requests exceeds the allowed throughput."}),
        ),
        "TransactWriteItems" => (
            400,
            serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [TransactionConflict, None, None, None]",
                "CancellationReasons": [
                    {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"},
                    {"Code": "None"}, {"Code": "None"}, {"Code": "None"}
                ]
            }),
        ),
        "UpdateItem" => (
            500,
            serde_json::json!({"__type": "com.amazon.coral.service#InternalServerError", "message": "boom"}),
        ),
        _ => (
            400,
            serde_json::json!({"__type": "com.amazon.coral.service#AccessDeniedException", "Message": "not allowed"}),
        ),
    };
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/x-amz-json-1.0")],
        body.to_string(),
    )
        .into_response()
}

/// SDK errors map as the crate maps them for the voice store: throttling, 5xx and transactions
/// that keep conflicting are retryable `Unavailable`; access denied is permanent.
#[tokio::test]
async fn sdk_errors_map_to_retryable_or_permanent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(fake_dynamodb);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client =
        aws_sdk_dynamodb::Client::new(&voice_adapters_aws::testing::test_sdk_config(&endpoint));
    let store = DynamoChat::new(client, ChatTables::new("C", "R", "U", "M"));
    let failure = |r: Result<(), ChatStoreError>| match r {
        Err(ChatStoreError::Unavailable(f)) => f,
        other => panic!("expected Unavailable, got {other:?}"),
    };
    let throttled = failure(store.user_name(&user("ann")).await.map(drop));
    assert!(throttled.retryable, "{throttled:?}");
    assert!(
        throttled.message.contains("ThrottlingException"),
        "{}",
        throttled.message
    );
    let conflict = failure(
        store
            .create_room(&record("r-1", "One", "ann"), usize::MAX)
            .await,
    );
    assert!(conflict.retryable, "{conflict:?}");
    assert!(
        conflict.message.contains("conflicting"),
        "{}",
        conflict.message
    );
    let internal = failure(store.bump_token_generation(&user("ann")).await.map(drop));
    assert!(internal.retryable, "{internal:?}");
    let denied = failure(store.message_page(&chat("r-1"), None, 10).await.map(drop));
    assert!(!denied.retryable, "{denied:?}");
    assert!(
        denied.message.contains("AccessDeniedException"),
        "{}",
        denied.message
    );
    server.abort();
}

/// A ban racing a join request: whichever wins, a banned user is never left pending, and the
/// requester's count of pending requests matches the room (both change in one transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_racing_a_request_never_leaves_a_banned_user_pending() {
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let store = DynamoChat::new(m.dynamodb.clone(), tables);
    let r = chat("room-race");
    store
        .create_room(&record("room-race", "Race", "ada"), usize::MAX)
        .await
        .unwrap();
    let users: Vec<_> = (0..12).map(|i| user(&format!("u{i}"))).collect();
    let races = users.iter().map(|u| {
        let store = &store;
        let r = &r;
        async move {
            let (asked, banned) = tokio::join!(
                store.request_join(r, u, chat_domain::JoinQuotas::UNLIMITED),
                store.remove_member(r, u, true, usize::MAX)
            );
            banned.expect("the ban always lands");
            match asked {
                Ok(_) | Err(ChatStoreError::Banned) => {}
                Err(e) => panic!("request failed: {e:?}"),
            }
        }
    });
    futures::future::join_all(races).await;
    let members = store.members(&r).await.unwrap();
    for u in &users {
        assert!(
            !members.iter().any(|(m, _)| m == u),
            "{u} is banned but listed: {members:?}"
        );
        assert_eq!(
            store
                .request_join(&r, u, chat_domain::JoinQuotas::UNLIMITED)
                .await,
            Err(ChatStoreError::Banned),
            "{u}"
        );
        assert_eq!(
            store.usage_of(u).await.unwrap().pending_requests,
            0,
            "{u}'s count follows the room"
        );
    }
}

/// The Lambda's sign-up gate on moto: at most the limit of new users per source address per
/// clock hour, even when they race (one conditional `UpdateItem` per sign-up); other addresses
/// and the next hour are not charged; the counter item is invisible to connection readers;
/// through the trait, the address is the one the handler put in scope, and a request without
/// one is not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_capped_per_address_per_hour_even_when_racing() {
    use chat_domain::SignUpGate;
    use voice_adapters_aws::{with_source_ip, DynamoSignUps};
    let Some((m, tables)) = chat_moto().await else {
        return;
    };
    let gate = DynamoSignUps::new(m.dynamodb.clone(), &tables.directory, 3);
    // The start of a clock hour (1.8e9 s is a whole number of hours).
    let hour: u64 = 1_800_000_000;
    let racing =
        futures::future::join_all((0..8).map(|_| gate.admit_from("203.0.113.7", hour + 10))).await;
    let admitted = racing.iter().filter(|r| *r == &Ok(true)).count();
    let refused = racing.iter().filter(|r| *r == &Ok(false)).count();
    println!("8 racing sign-ups from one address, limit 3: {admitted} admitted, {refused} refused");
    assert_eq!((admitted, refused), (3, 5), "{racing:?}");
    assert_eq!(gate.admit_from("203.0.113.8", hour + 20).await, Ok(true));
    assert_eq!(
        gate.admit_from("203.0.113.7", hour + 3599).await,
        Ok(false),
        "the same clock hour"
    );
    assert_eq!(
        gate.admit_from("203.0.113.7", hour + 3600).await,
        Ok(true),
        "the next hour"
    );

    let store = DynamoChat::new(m.dynamodb.clone(), tables.clone());
    assert!(
        store.identified_connections().await.unwrap().is_empty(),
        "counter items are not connections"
    );

    let c = voice_domain::ConnectionId::parse("Xk2IbF_doAMFhDg=").unwrap();
    let mut through_trait = Vec::new();
    for _ in 0..4 {
        through_trait.push(
            with_source_ip(Some("198.51.100.1".into()), gate.admit(&c))
                .await
                .unwrap(),
        );
    }
    assert_eq!(through_trait, [true, true, true, false]);
    assert_eq!(
        gate.admit(&c).await,
        Ok(true),
        "no address in scope: not charged"
    );
}
