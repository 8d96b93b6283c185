//! DynamoDirectory against chat tables populated in moto.

use aws_sdk_dynamodb::types::AttributeValue;
use voice_adapters_aws::testing::CONNECTIONS_BY_USER_INDEX;
use voice_adapters_aws::{DirectorySchema, DynamoDirectory};
use voice_domain::ports::{ChatDirectory, DirectoryError, MemberState, Membership};

use crate::support::*;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

async fn put_connection(m: &Moto, id: &str, user: Option<&str>) {
    let mut req = m
        .dynamodb
        .put_item()
        .table_name(&m.tables.connections)
        .item("connectionId", s(id));
    if let Some(u) = user {
        req = req.item("userId", s(u));
    }
    req.send().await.unwrap();
}

/// Room `chat-1`: admin `ada`, approved `bob` (string set), pending `carol` (list).
/// Connections: ada ×1, bob ×2, carol, eve (no member), one without a user.
async fn populate(m: &Moto) {
    m.dynamodb
        .put_item()
        .table_name(&m.tables.rooms)
        .item("roomId", s("chat-1"))
        .item("name", s("Friends"))
        .item("creatorId", s("ada"))
        .item("members", AttributeValue::Ss(vec!["bob".into()]))
        .item("pendingRequests", AttributeValue::L(vec![s("carol")]))
        .send()
        .await
        .unwrap();
    for (c, u) in [
        ("c-ada=", Some("ada")),
        ("c-bob-1", Some("bob")),
        ("c-bob-2", Some("bob")),
        ("c-carol", Some("carol")),
        ("c-eve", Some("eve")),
        ("c-anon", None),
    ] {
        put_connection(m, c, u).await;
    }
}

fn directory(m: &Moto) -> DynamoDirectory {
    DynamoDirectory::new(
        m.dynamodb.clone(),
        DirectorySchema::new(&m.tables.connections, &m.tables.rooms),
    )
}

#[tokio::test]
async fn user_of_reads_the_connections_table() {
    let Some(m) = moto().await else { return };
    populate(&m).await;
    let d = directory(&m);
    assert_eq!(d.user_of(&conn("c-ada=")).await.unwrap(), Some(user("ada")));
    assert_eq!(
        d.user_of(&conn("c-bob-2")).await.unwrap(),
        Some(user("bob"))
    );
    assert_eq!(d.user_of(&conn("c-gone")).await.unwrap(), None);
    assert_eq!(
        d.user_of(&conn("c-anon")).await.unwrap(),
        None,
        "item without a user"
    );
}

#[tokio::test]
async fn membership_tells_admin_approved_pending_and_strangers_apart() {
    let Some(m) = moto().await else { return };
    populate(&m).await;
    let d = directory(&m);
    let room = chat("chat-1");
    assert_eq!(
        d.membership(&room, &user("ada")).await.unwrap(),
        Some(Membership {
            state: MemberState::Approved,
            is_admin: true
        })
    );
    assert_eq!(
        d.membership(&room, &user("bob")).await.unwrap(),
        Some(Membership {
            state: MemberState::Approved,
            is_admin: false
        })
    );
    assert_eq!(
        d.membership(&room, &user("carol")).await.unwrap(),
        Some(Membership {
            state: MemberState::Pending,
            is_admin: false
        })
    );
    assert_eq!(
        d.membership(&room, &user("eve")).await.unwrap(),
        Some(Membership {
            state: MemberState::None,
            is_admin: false
        })
    );
    assert_eq!(
        d.membership(&chat("chat-none"), &user("ada"))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn connections_of_lists_approved_members_only_by_scan_and_by_index() {
    let Some(m) = moto().await else { return };
    populate(&m).await;
    let want = vec![conn("c-ada="), conn("c-bob-1"), conn("c-bob-2")];
    let scan = directory(&m);
    assert_eq!(scan.connections_of(&chat("chat-1")).await.unwrap(), want);
    let mut schema = DirectorySchema::new(&m.tables.connections, &m.tables.rooms);
    schema.connections_by_user_index = Some(CONNECTIONS_BY_USER_INDEX.into());
    let indexed = DynamoDirectory::new(m.dynamodb.clone(), schema);
    assert_eq!(indexed.connections_of(&chat("chat-1")).await.unwrap(), want);
    assert!(scan
        .connections_of(&chat("chat-none"))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn rooms_with_more_members_than_an_in_list_holds_still_work() {
    let Some(m) = moto().await else { return };
    let members: Vec<AttributeValue> = (0..150).map(|i| s(&format!("m{i}"))).collect();
    m.dynamodb
        .put_item()
        .table_name(&m.tables.rooms)
        .item("roomId", s("big"))
        .item("creatorId", s("boss"))
        .item("members", AttributeValue::L(members))
        .send()
        .await
        .unwrap();
    for (c, u) in [
        ("c-1", "m0"),
        ("c-2", "m149"),
        ("c-3", "outsider"),
        ("c-4", "boss"),
    ] {
        put_connection(&m, c, Some(u)).await;
    }
    let want = vec![conn("c-1"), conn("c-2"), conn("c-4")];
    assert_eq!(
        directory(&m).connections_of(&chat("big")).await.unwrap(),
        want
    );
    // By index: one query per member, many more members than queries in flight at once.
    let mut schema = DirectorySchema::new(&m.tables.connections, &m.tables.rooms);
    schema.connections_by_user_index = Some(CONNECTIONS_BY_USER_INDEX.into());
    let indexed = DynamoDirectory::new(m.dynamodb.clone(), schema);
    const { assert!(151 > voice_adapters_aws::directory::QUERY_CONCURRENCY) };
    assert_eq!(indexed.connections_of(&chat("big")).await.unwrap(), want);
}

#[tokio::test]
async fn configurable_attribute_names_and_map_shaped_members() {
    let Some(m) = moto().await else { return };
    m.dynamodb
        .put_item()
        .table_name(&m.tables.rooms)
        .item("roomId", s("chat-x"))
        .item("adminUserId", s("ada"))
        .item(
            "approved",
            AttributeValue::L(vec![AttributeValue::M(
                [
                    ("userId".to_owned(), s("bob")),
                    ("name".to_owned(), s("Bob")),
                ]
                .into(),
            )]),
        )
        .send()
        .await
        .unwrap();
    let mut schema = DirectorySchema::new(&m.tables.connections, &m.tables.rooms);
    schema.room_admin_attr = "adminUserId".into();
    schema.room_members_attr = "approved".into();
    let d = DynamoDirectory::new(m.dynamodb.clone(), schema);
    assert_eq!(
        d.membership(&chat("chat-x"), &user("ada")).await.unwrap(),
        Some(Membership {
            state: MemberState::Approved,
            is_admin: true
        })
    );
    assert_eq!(
        d.membership(&chat("chat-x"), &user("bob"))
            .await
            .unwrap()
            .map(|m| m.state),
        Some(MemberState::Approved)
    );
}

#[tokio::test]
async fn a_malformed_member_list_is_a_permanent_failure_not_a_denial() {
    let Some(m) = moto().await else { return };
    m.dynamodb
        .put_item()
        .table_name(&m.tables.rooms)
        .item("roomId", s("chat-bad"))
        .item("creatorId", s("ada"))
        .item("members", s("bob,carol"))
        .send()
        .await
        .unwrap();
    match directory(&m)
        .membership(&chat("chat-bad"), &user("bob"))
        .await
    {
        Err(DirectoryError::Unavailable(f)) => {
            assert!(!f.retryable);
            assert!(f.message.contains("members"), "{}", f.message);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
