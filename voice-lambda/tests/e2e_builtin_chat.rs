//! The Lambda with `CHAT_MODE=builtin`, end to end over the wiring the binary uses
//! ([`voice_lambda::aws::executor`]): the chat tables and the resume-token secret on a real
//! `moto_server` (DynamoDB, STS, Secrets Manager), KVS on the AWS adapters' fake, and events on
//! the recording stand-in of the API Gateway Management API (`common::management`). Two
//! connections sign in, create a room, request, approve, chat and start voice purely through
//! `VoiceLambda::handle` events, with no table written by hand; a connection API Gateway calls
//! gone is unbound from the chat store.
//!
//! Without `moto_server` this follows the team's rule: fail under `VOICE_TEST_STRICT=1`,
//! otherwise print `SKIPPED` and return.

mod common;

use common::aws_world::{AwsWorld, Chat};
use common::management::names;
use common::*;
use serde_json::{json, Value};
use voice_adapters_aws::testing::{MotoServer, TestTables, TEST_ROLE_ARN};
use voice_lambda::LambdaConfig;

const ADA: &str = "L0SM9cOFvHcCIhw=";
const BO: &str = "L0SNEdbXvHcCFxQ=";
const BO_TAB2: &str = "L0SZZZZZvHcCFxQ=";

/// A request frame on `$default` (the route API Gateway picks for an action without a
/// route of its own), as the web client sends it.
async fn send(w: &AwsWorld, connection: &str, frame: Value) -> Response {
    call(&w.lambda, ws_event("$default", connection, Some(frame))).await
}

/// The names of the events posted to `connection` since the last look.
fn events(w: &AwsWorld, connection: &str) -> Vec<String> {
    names(&w.mgmt.take(connection))
}

/// The connection ids in the chat's connections table.
async fn connection_items(w: &AwsWorld) -> Vec<String> {
    let out = w
        .ddb
        .scan()
        .table_name(&w.tables.connections)
        .send()
        .await
        .unwrap();
    let mut ids: Vec<String> = out
        .items()
        .iter()
        .filter_map(|i| i.get("connectionId")?.as_s().ok().cloned())
        // The sign-up gate's counters share the table; they are not connections.
        .filter(|id| !id.starts_with("signup#"))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn two_people_sign_in_chat_and_start_voice_through_the_lambda() {
    let Some(w) = AwsWorld::start(Chat::Builtin).await else {
        return;
    };

    // Before hello: NOT_IDENTIFIED, as on the self-hosted server.
    let r = send(&w, ADA, json!({"action": "createRoom", "name": "General"})).await;
    assert_refused(&r, 401, "NOT_IDENTIFIED");

    // Sign-in: a user id and a resume token signed with the stack's key.
    let r = send(
        &w,
        ADA,
        json!({"action": "hello", "requestId": "h1", "name": "Ada"}),
    )
    .await;
    assert_ok(&r, "hello");
    let ada = r.data()["userId"].as_str().unwrap().to_owned();
    assert_eq!(r.data()["resumed"], false);
    let r = send(&w, BO, json!({"action": "hello", "name": "Bo"})).await;
    assert_ok(&r, "hello");
    let bo = r.data()["userId"].as_str().unwrap().to_owned();
    let bo_token = r.data()["resumeToken"].as_str().unwrap().to_owned();

    // A room; every identified connection hears of it.
    let r = send(&w, ADA, json!({"action": "createRoom", "name": "General"})).await;
    assert_ok(&r, "createRoom");
    let room = r.data()["roomId"].as_str().unwrap().to_owned();
    assert_eq!(events(&w, ADA), vec!["roomCreated"]);
    assert_eq!(events(&w, BO), vec!["roomCreated"]);

    // Bo asks; Ada (the admin) hears it and approves.
    let r = send(&w, BO, json!({"action": "requestJoin", "roomId": room})).await;
    assert_ok(&r, "requestJoin");
    assert_eq!(r.data()["state"], "pending");
    assert_eq!(events(&w, ADA), vec!["joinRequested"]);
    let r = send(
        &w,
        ADA,
        json!({"action": "approveJoin", "roomId": room, "userId": bo}),
    )
    .await;
    assert_ok(&r, "approveJoin");
    let mut bo_events = events(&w, BO);
    bo_events.sort();
    assert_eq!(bo_events, vec!["joinApproved", "memberJoined"]);
    assert_eq!(events(&w, ADA), vec!["memberJoined"]);

    // Messages reach both; history is kept.
    let r = send(
        &w,
        BO,
        json!({"action": "sendMessage", "roomId": room, "text": "hi Ada"}),
    )
    .await;
    assert_ok(&r, "sendMessage");
    assert_eq!(events(&w, ADA), vec!["message"]);
    assert_eq!(events(&w, BO), vec!["message"]);
    let r = send(&w, ADA, json!({"action": "getMessages", "roomId": room})).await;
    assert_ok(&r, "getMessages");
    let messages = r.data()["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["text"], "hi Ada");
    assert_eq!(messages[0]["userId"], bo.as_str());
    let r = send(&w, BO, json!({"action": "listMembers", "roomId": room})).await;
    assert_ok(&r, "listMembers");
    let members = r.data()["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["userId"], ada.as_str());

    // Voice over the same identities: Ada starts it, both get credentials.
    let r = send(
        &w,
        ADA,
        json!({"action": "createVoiceRoom", "roomId": room}),
    )
    .await;
    assert_ok(&r, "createVoiceRoom");
    let vr = r.data()["voiceRoomId"].as_str().unwrap().to_owned();
    assert_eq!(r.data()["masterUserId"], ada.as_str());
    let r = send(
        &w,
        ADA,
        json!({"action": "getVoiceCredentials", "voiceRoomId": vr}),
    )
    .await;
    assert_ok(&r, "getVoiceCredentials");
    assert_eq!(r.data()["role"], "MASTER");
    let r = send(
        &w,
        BO,
        json!({"action": "getVoiceCredentials", "voiceRoomId": vr}),
    )
    .await;
    assert_ok(&r, "getVoiceCredentials");
    assert_eq!(r.data()["peers"].as_array().unwrap().len(), 1);
    let r = send(&w, BO, json!({"action": "listRooms"})).await;
    assert_ok(&r, "listRooms");
    assert_eq!(r.data()["rooms"][0]["voiceRoomId"], vr.as_str());

    // A second tab resumes Bo with his token: the same user, not a new one.
    let r = send(
        &w,
        BO_TAB2,
        json!({"action": "hello", "name": "Bo", "resumeToken": bo_token}),
    )
    .await;
    assert_ok(&r, "hello");
    assert_eq!(r.data()["userId"], bo.as_str());
    assert_eq!(r.data()["resumed"], true);

    // The first tab's socket dies without a $disconnect reaching the Lambda: the next chat
    // event posted to it gets GoneException, and the connection is unbound from the store
    // (so later fan-outs skip it), while the live tab still gets the message.
    w.mgmt.take(BO);
    w.mgmt.take(BO_TAB2);
    w.mgmt.take(ADA);
    assert!(connection_items(&w).await.contains(&BO.to_owned()));
    w.mgmt.mark_gone(BO);
    let r = send(
        &w,
        ADA,
        json!({"action": "sendMessage", "roomId": room, "text": "still there?"}),
    )
    .await;
    assert_ok(&r, "sendMessage");
    assert_eq!(events(&w, BO_TAB2), vec!["message"]);
    assert!(
        events(&w, BO).is_empty(),
        "a gone connection records nothing"
    );
    let left = connection_items(&w).await;
    assert!(
        !left.contains(&BO.to_owned()),
        "the gone connection is unbound: {left:?}"
    );
    assert!(left.contains(&BO_TAB2.to_owned()), "{left:?}");
    assert!(left.contains(&ADA.to_owned()), "{left:?}");
}

#[tokio::test]
async fn a_missing_secret_stops_the_cold_start_naming_it() {
    let Some(moto) = MotoServer::start_or_skip() else {
        return;
    };
    let tables = TestTables::unique();
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-key-AbCdEf";
    let config = LambdaConfig::from_lookup(|name| {
        Some(match name {
            "CONNECTIONS_TABLE" => tables.connections.clone(),
            "ROOMS_TABLE" => tables.rooms.clone(),
            "VOICE_ROOMS_TABLE" => tables.voice_rooms.clone(),
            "USERS_TABLE" => "ChatUsers".to_owned(),
            "MESSAGES_TABLE" => "ChatMessages".to_owned(),
            "RESUME_KEY_SECRET_ARN" => arn.to_owned(),
            "KVS_ROLE_ARN" => TEST_ROLE_ARN.to_owned(),
            _ => return None,
        })
    })
    .unwrap();
    let clients = voice_lambda::aws::clients(&moto.sdk_config(), &config).unwrap();
    let err = match voice_lambda::aws::executor(&clients, &config).await {
        Ok(_) => panic!("a cold start without its key must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(arn), "{err}");
    assert!(err.contains("secretsmanager:GetSecretValue"), "{err}");
}

/// The Lambda charges new users to the event's `requestContext.identity.sourceIp`: the 31st
/// `hello` without a resume token from one address in an hour is `QUOTA_EXCEEDED` (the
/// default `MAX_NEW_USERS_PER_IP_PER_HOUR` is 30, as self-hosted) and stores no user; another
/// address still signs up, and a returning user with a resume token is not counted.
#[tokio::test]
async fn new_users_per_source_address_are_capped_through_the_lambda() {
    let Some(w) = AwsWorld::start(Chat::Builtin).await else {
        return;
    };
    let hello = |conn: &str, ip: &str, body: Value| {
        let mut e = ws_event("$default", conn, Some(body));
        e["requestContext"]["identity"]["sourceIp"] = Value::from(ip);
        e
    };
    let mut first_token = None;
    for i in 0..30 {
        let r = call(
            &w.lambda,
            hello(
                &format!("Conn{i:04}AAAAAA="),
                "198.51.100.9",
                json!({"action": "hello", "name": format!("U{i}")}),
            ),
        )
        .await;
        assert_eq!(r.status, 200, "sign-up {i}: {r:?}");
        first_token.get_or_insert(r.body["data"]["resumeToken"].as_str().unwrap().to_owned());
    }
    let refused = call(
        &w.lambda,
        hello(
            "ConnOverAAAAAA=",
            "198.51.100.9",
            json!({"action": "hello", "name": "One too many"}),
        ),
    )
    .await;
    assert_refused(&refused, 409, "QUOTA_EXCEEDED");
    let elsewhere = call(
        &w.lambda,
        hello(
            "ConnElseAAAAAA=",
            "198.51.100.10",
            json!({"action": "hello", "name": "Elsewhere"}),
        ),
    )
    .await;
    assert_eq!(elsewhere.status, 200, "{elsewhere:?}");
    let back = call(
        &w.lambda,
        hello(
            "ConnBackAAAAAA=",
            "198.51.100.9",
            json!({"action": "hello", "name": "U0", "resumeToken": first_token.unwrap()}),
        ),
    )
    .await;
    assert_eq!(
        back.status, 200,
        "a returning user is not counted: {back:?}"
    );
    assert_eq!(back.body["data"]["resumed"], true);
}
