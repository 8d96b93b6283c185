//! KvsChannels against the fake KVS (no emulator exists for signaling channels).

use std::time::Duration;

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use voice_adapters_aws::testing::FakeKvs;
use voice_adapters_aws::KvsChannels;
use voice_domain::ports::{ChannelError, ChannelTags, SignalingChannels};
use voice_domain::{ChannelArn, ChannelName, ChannelRole, ClientId, SignalingChannel, Timestamp};

use crate::support::*;

fn channels(fake: &FakeKvs) -> KvsChannels {
    KvsChannels::new(fake.kvs_client(), fake.signaling_client())
}

fn tags() -> ChannelTags {
    ChannelTags {
        chat_room: chat("room#1"),
        voice_room: vr("vr-1"),
        owner: user("alice"),
    }
}

fn name(s: &str) -> ChannelName {
    ChannelName::from_unique(s).unwrap()
}

#[tokio::test]
async fn create_makes_a_tagged_single_master_channel() {
    let fake = FakeKvs::start().await;
    let ch = channels(&fake).create(&name("a1"), &tags()).await.unwrap();
    assert_eq!(ch.name.as_str(), "voice-a1");
    let stored = fake.channels();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].arn, ch.arn.as_str());
    assert_eq!(stored[0].channel_type, "SINGLE_MASTER");
    assert_eq!(stored[0].tags["app"], "voice-rooms");
    assert_eq!(stored[0].tags["voiceRoomId"], "vr-1");
    assert_eq!(stored[0].tags["owner"], "alice");
    assert_eq!(
        stored[0].tags["chatRoomId"], "room=231",
        "encoded for KVS's tag alphabet"
    );
}

#[tokio::test]
async fn delete_passes_the_current_version_and_is_idempotent() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ch = kvs.create(&name("d1"), &tags()).await.unwrap();
    let version = fake.channels()[0].version.clone();
    kvs.delete(&ch).await.unwrap();
    assert!(fake.channels().is_empty());
    let deletes = fake.requests_to("/deleteSignalingChannel");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].body["CurrentVersion"], version.as_str());
    assert_eq!(deletes[0].body["ChannelARN"], ch.arn.as_str());
    // Gone already: Describe says ResourceNotFound, and that is success.
    kvs.delete(&ch).await.unwrap();
    assert_eq!(fake.requests_to("/deleteSignalingChannel").len(), 1);
}

#[tokio::test]
async fn delete_describes_again_after_a_version_mismatch() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ch = kvs.create(&name("d2"), &tags()).await.unwrap();
    let described = fake.requests_to("/describeSignalingChannel").len();
    fake.fail_next("/deleteSignalingChannel", 400, "VersionMismatchException");
    kvs.delete(&ch).await.unwrap();
    assert!(fake.channels().is_empty());
    assert_eq!(
        fake.requests_to("/describeSignalingChannel").len(),
        described + 2
    );
    assert_eq!(fake.requests_to("/deleteSignalingChannel").len(), 2);
}

#[tokio::test]
async fn delete_treats_a_channel_that_vanished_in_between_as_deleted() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ch = kvs.create(&name("d3"), &tags()).await.unwrap();
    fake.fail_next("/deleteSignalingChannel", 404, "ResourceNotFoundException");
    kvs.delete(&ch).await.unwrap();
}

#[tokio::test]
async fn endpoints_come_from_kvs_and_ice_servers_from_the_https_endpoint() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ch = kvs.create(&name("e1"), &tags()).await.unwrap();
    let client = ClientId::from_connection(&conn("abc=")).unwrap();

    let master = kvs
        .endpoints(&ch, ChannelRole::Master, &client)
        .await
        .unwrap();
    assert!(master.wss.starts_with("wss://m-master."), "{}", master.wss);
    assert_eq!(master.https.as_deref(), Some(fake.endpoint().as_str()));
    assert_eq!(
        master.ice_servers[0].urls,
        ["stun:stun.kinesisvideo.us-east-1.amazonaws.com:443"]
    );
    assert_eq!(master.ice_servers[0].credential, None);
    let turn = &master.ice_servers[1];
    assert!(
        turn.urls.iter().all(|u| u.starts_with("turn")),
        "{:?}",
        turn.urls
    );
    assert_eq!(
        turn.credential.as_ref().map(|c| c.expose()),
        Some("fake-turn-password")
    );
    assert!(turn.username.as_deref().unwrap().ends_with(":abc.3D"));
    assert!(
        !format!("{turn:?}").contains("fake-turn-password"),
        "TURN password redacted"
    );

    let viewer = kvs
        .endpoints(&ch, ChannelRole::Viewer, &client)
        .await
        .unwrap();
    assert!(viewer.wss.starts_with("wss://m-viewer."), "{}", viewer.wss);

    let asked = fake.requests_to("/getSignalingChannelEndpoint");
    let roles: Vec<_> = asked
        .iter()
        .map(|r| r.body["SingleMasterChannelEndpointConfiguration"]["Role"].clone())
        .collect();
    assert_eq!(roles, ["MASTER", "VIEWER"]);
    assert_eq!(
        asked[0].body["SingleMasterChannelEndpointConfiguration"]["Protocols"],
        serde_json::json!(["WSS", "HTTPS"])
    );
    // The signaling client's own endpoint is a closed port: these arrived through the
    // per-call override to the HTTPS endpoint.
    let ice = fake.requests_to("/v1/get-ice-server-config");
    assert_eq!(ice.len(), 2);
    assert_eq!(ice[0].body["ChannelARN"], ch.arn.as_str());
    assert_eq!(ice[0].body["ClientId"], "abc.3D");
    assert_eq!(ice[0].body["Service"], "TURN");
}

#[tokio::test]
async fn endpoints_of_a_missing_channel_are_not_found() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ghost = SignalingChannel {
        name: name("ghost"),
        arn: ChannelArn::parse("arn:aws:kinesisvideo:us-east-1:123456789012:channel/voice-ghost/1")
            .unwrap(),
    };
    let client = ClientId::parse("c1").unwrap();
    assert_eq!(
        kvs.endpoints(&ghost, ChannelRole::Viewer, &client).await,
        Err(ChannelError::NotFound)
    );
    // Found by the control plane but gone by the time ICE servers are asked for.
    let ch = kvs.create(&name("e2"), &tags()).await.unwrap();
    fake.fail_next(
        "/v1/get-ice-server-config",
        404,
        "ResourceNotFoundException",
    );
    assert_eq!(
        kvs.endpoints(&ch, ChannelRole::Master, &client).await,
        Err(ChannelError::NotFound)
    );
}

/// Failed before the fix: the sweep's listing selected by the name prefix alone, so another
/// stack's or application's `voice-*` channels were listed (and deleted as orphans).
#[tokio::test]
async fn list_pages_through_this_stacks_channels_only_with_tags_and_creation_time() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake).with_stack_id(Some("stack-a".into()));
    let ours: Vec<_> = ["l1", "l2", "l3"].into_iter().map(name).collect();
    for n in &ours {
        kvs.create(n, &tags()).await.unwrap();
    }
    assert!(fake
        .channels()
        .iter()
        .all(|c| c.tags.get("voiceStack").map(String::as_str) == Some("stack-a")));
    let manual = fake.insert_channel(
        "voice-by-hand",
        &[("app", "voice-rooms"), ("voiceStack", "stack-a")],
        1_700_000_000.5,
    );
    fake.insert_channel("voice-untagged", &[], 1_700_000_000.0);
    fake.insert_channel(
        "voice-other-stack",
        &[("app", "voice-rooms"), ("voiceStack", "stack-b")],
        1_700_000_000.0,
    );
    fake.insert_channel("voice-other-app", &[("app", "other")], 1_700_000_000.0);
    fake.insert_channel("other-app", &[("app", "other")], 1_700_000_000.0);

    let mut listed = kvs.list().await.unwrap();
    listed.sort_by(|a, b| a.channel.name.cmp(&b.channel.name));
    let names: Vec<&str> = listed.iter().map(|l| l.channel.name.as_str()).collect();
    assert_eq!(names, ["voice-by-hand", "voice-l1", "voice-l2", "voice-l3"]);
    assert!(
        fake.requests_to("/listSignalingChannels").len() >= 2,
        "paged"
    );
    let by_hand = &listed[0];
    assert_eq!(by_hand.channel.arn.as_str(), manual);
    assert_eq!(by_hand.tags, None, "ours, but without the ids");
    assert_eq!(
        by_hand.created_at,
        Timestamp::from_millis(1_700_000_000_500)
    );
    for l in &listed[1..] {
        assert_eq!(l.tags.as_ref(), Some(&tags()));
        assert!(l.created_at.as_millis() > 1_700_000_000_000);
    }
    let filter = &fake.requests_to("/listSignalingChannels")[0].body["ChannelNameCondition"];
    assert_eq!(filter["ComparisonOperator"], "BEGINS_WITH");
    assert_eq!(filter["ComparisonValue"], "voice-");

    // Without a stack id (a deployment that predates it), only app=voice-rooms channels.
    let any_stack = channels(&fake).list().await.unwrap();
    assert_eq!(any_stack.len(), 5, "l1-l3, by-hand and other-stack");
}

/// Tag look-ups run concurrently (4 at a time): with 50 ms per AWS call, 40 channels take
/// about 10 rounds, not 40.
#[tokio::test]
async fn listing_looks_tags_up_concurrently() {
    let fake = FakeKvs::start().await;
    for i in 0..40 {
        fake.insert_channel(
            &format!("voice-c{i:02}"),
            &[("app", "voice-rooms")],
            1_700_000_000.0,
        );
    }
    fake.set_latency(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let listed = channels(&fake).list().await.unwrap();
    let took = started.elapsed();
    assert_eq!(listed.len(), 40);
    // Reported, not asserted (no timed assertions): sequential look-ups took 40 x 50 ms.
    eprintln!(
        "list of 40 channels at 50 ms per call: {} ms ({} list pages)",
        took.as_millis(),
        fake.requests_to("/listSignalingChannels").len()
    );
}

#[tokio::test]
async fn kvs_errors_map_to_the_port_contract() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let create = "/createSignalingChannel";

    fake.fail_next(create, 400, "AccountChannelLimitExceededException");
    assert_eq!(
        kvs.create(&name("x1"), &tags()).await,
        Err(ChannelError::LimitExceeded)
    );

    for (status, kind, retryable) in [
        (400, "ClientLimitExceededException", true),
        (500, "InternalFailure", true),
        (503, "ServiceUnavailableException", true),
        (401, "AccessDeniedException", false),
        (400, "InvalidArgumentException", false),
        (400, "TagsPerResourceExceededLimitException", false),
    ] {
        fake.fail_next(create, status, kind);
        match kvs.create(&name("x2"), &tags()).await {
            Err(ChannelError::Unavailable(f)) => {
                assert_eq!(f.retryable, retryable, "{kind}: {f:?}");
                assert!(f.message.contains(kind), "{}", f.message);
            }
            other => panic!("{kind}: expected Unavailable, got {other:?}"),
        }
    }
    assert!(
        fake.channels().is_empty(),
        "no failed create left a channel"
    );

    let ch = kvs.create(&name("x3"), &tags()).await.unwrap();
    fake.fail_next("/describeSignalingChannel", 401, "AccessDeniedException");
    assert!(matches!(kvs.delete(&ch).await, Err(ChannelError::Unavailable(f)) if !f.retryable));
    fake.fail_next(
        "/deleteSignalingChannel",
        400,
        "ClientLimitExceededException",
    );
    assert!(matches!(kvs.delete(&ch).await, Err(ChannelError::Unavailable(f)) if f.retryable));
    fake.fail_next(
        "/listSignalingChannels",
        400,
        "ClientLimitExceededException",
    );
    assert!(matches!(kvs.list().await, Err(ChannelError::Unavailable(f)) if f.retryable));
    fake.fail_next("/getSignalingChannelEndpoint", 401, "AccessDeniedException");
    let client = ClientId::parse("c1").unwrap();
    assert!(matches!(
        kvs.endpoints(&ch, ChannelRole::Master, &client).await,
        Err(ChannelError::Unavailable(f)) if !f.retryable
    ));
    fake.fail_next(
        "/v1/get-ice-server-config",
        400,
        "ClientLimitExceededException",
    );
    assert!(matches!(
        kvs.endpoints(&ch, ChannelRole::Master, &client).await,
        Err(ChannelError::Unavailable(f)) if f.retryable
    ));
    kvs.delete(&ch).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The fake behaves as KVS documents it (testing::kvs_docs), and the adapter copes with it
// ---------------------------------------------------------------------------------------------

fn deployed(fake: &FakeKvs) -> KvsChannels {
    KvsChannels::new(fake.deployed_kvs_client(), fake.deployed_signaling_client())
}

#[tokio::test]
async fn fake_channels_are_creating_then_active_and_refuse_endpoints_until_then() {
    let fake = FakeKvs::start().await;
    fake.set_delays(Duration::from_secs(60), Duration::from_secs(60));
    let kvs = fake.kvs_client();
    let arn = kvs
        .create_signaling_channel()
        .channel_name("voice-raw")
        .send()
        .await
        .unwrap()
        .channel_arn
        .unwrap();
    let info = kvs
        .describe_signaling_channel()
        .channel_arn(&arn)
        .send()
        .await
        .unwrap()
        .channel_info
        .unwrap();
    assert_eq!(info.channel_status.unwrap().as_str(), "CREATING");
    let err = kvs
        .get_signaling_channel_endpoint()
        .channel_arn(&arn)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"));
    let err = kvs
        .delete_signaling_channel()
        .channel_arn(&arn)
        .current_version(info.version.unwrap())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ResourceInUseException"));
}

#[tokio::test]
async fn fake_throttles_per_channel_with_client_limit_exceeded() {
    let fake = FakeKvs::start().await;
    let arn = fake.insert_channel("voice-busy", &[], 1_700_000_000.0);
    let kvs = fake.kvs_client();
    let mut codes = Vec::new();
    // DescribeSignalingChannel: 5 TPS per channel. Six calls take far less than a second here.
    for _ in 0..6 {
        let res = kvs
            .describe_signaling_channel()
            .channel_arn(&arn)
            .send()
            .await;
        codes.push(res.err().and_then(|e| e.code().map(str::to_owned)));
    }
    assert_eq!(codes[..5], [None, None, None, None, None]);
    assert_eq!(codes[5].as_deref(), Some("ClientLimitExceededException"));
    assert_eq!(fake.answered(400), 1);
}

#[tokio::test]
async fn fake_turn_credentials_expire_after_300_seconds() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ch = kvs.create(&name("t1"), &tags()).await.unwrap();
    let client = ClientId::parse("c1").unwrap();
    let e = kvs
        .endpoints(&ch, ChannelRole::Viewer, &client)
        .await
        .unwrap();
    let user = e.ice_servers[1].username.clone().unwrap();
    let expires: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 299..=now + 301).contains(&expires), "{user}");
}

/// Failed before the fix: `create` returned at once, and GetSignalingChannelEndpoint on the
/// new channel answered ResourceInUseException (Unavailable, not retryable).
#[tokio::test]
async fn a_created_channel_is_active_and_usable_at_once() {
    let fake = FakeKvs::start().await;
    let kvs = channels(&fake);
    let ch = kvs.create(&name("n1"), &tags()).await.unwrap();
    assert_eq!(fake.channels()[0].status, "ACTIVE");
    let client = ClientId::parse("c1").unwrap();
    kvs.endpoints(&ch, ChannelRole::Master, &client)
        .await
        .unwrap();
    kvs.delete(&ch).await.unwrap();
    assert!(fake.channels().is_empty(), "DELETING, then gone");
}

#[tokio::test]
async fn endpoints_of_a_channel_still_creating_wait_for_it() {
    let fake = FakeKvs::start().await;
    let raw = fake.kvs_client();
    let arn = raw
        .create_signaling_channel()
        .channel_name("voice-other")
        .send()
        .await
        .unwrap()
        .channel_arn
        .unwrap();
    let ch = SignalingChannel {
        name: name("other"),
        arn: ChannelArn::parse(arn).unwrap(),
    };
    let client = ClientId::parse("c1").unwrap();
    channels(&fake)
        .endpoints(&ch, ChannelRole::Viewer, &client)
        .await
        .unwrap();
    assert!(fake.answered(400) >= 1, "it was refused at first");
}

#[tokio::test]
async fn waiting_for_active_has_a_deadline() {
    let fake = FakeKvs::start().await;
    fake.set_delays(Duration::from_secs(60), Duration::ZERO);
    let kvs = channels(&fake).with_activation_timeout(Duration::from_millis(600));
    match kvs.create(&name("slow"), &tags()).await {
        Err(ChannelError::Unavailable(f)) => {
            assert!(f.retryable, "{f:?}");
            assert!(f.message.contains("Creating"), "{}", f.message);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Failed before the fix: the SDK's standard classifiers do not treat
/// ClientLimitExceededException (HTTP 400) as throttling, so 12 simultaneous joins on one
/// channel (GetIceServerConfig: 5 TPS per channel) failed with UNAVAILABLE.
#[tokio::test]
async fn throttled_kvs_calls_are_retried_with_backoff() {
    let fake = FakeKvs::start().await;
    let kvs = deployed(&fake);
    let ch = kvs.create(&name("hot"), &tags()).await.unwrap();
    let client = ClientId::parse("c1").unwrap();
    let calls = (0..12).map(|_| kvs.endpoints(&ch, ChannelRole::Viewer, &client));
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(
        fake.answered(400) >= 1,
        "the fake throttled some calls (else this test proves nothing)"
    );
}
