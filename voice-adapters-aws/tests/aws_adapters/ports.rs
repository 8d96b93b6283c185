//! The whole AWS port set under the real service: moto for DynamoDB, STS and the management
//! API, the fake for KVS. Checks that the adapters fit together (AwsClients → AwsPorts), not
//! the use cases themselves (voice-domain tests those).

use aws_sdk_dynamodb::types::AttributeValue;
use voice_adapters_aws::testing::FakeKvs;
use voice_adapters_aws::AwsPorts;
use voice_domain::ports::{Credentials, VoiceRoomStore};
use voice_domain::{ServiceConfig, VoiceService};

use crate::support::*;

#[tokio::test]
async fn start_join_and_end_through_aws_ports() {
    let Some(m) = moto().await else { return };
    let fake = FakeKvs::start().await;
    let s = |v: &str| AttributeValue::S(v.to_owned());
    m.dynamodb
        .put_item()
        .table_name(&m.tables.rooms)
        .item("roomId", s("chat-1"))
        .item("creatorId", s("ada"))
        .item("members", AttributeValue::Ss(vec!["bob".into()]))
        .send()
        .await
        .unwrap();
    for (c, u) in [("c-ada", "ada"), ("c-bob=", "bob")] {
        m.dynamodb
            .put_item()
            .table_name(&m.tables.connections)
            .item("connectionId", s(c))
            .item("userId", s(u))
            .send()
            .await
            .unwrap();
    }

    let cfg = m.server.aws_config(&m.tables);
    let mut clients = m.server.clients(&m.tables);
    clients.kvs = fake.kvs_client();
    clients.kvs_signaling = fake.signaling_client();
    let service = VoiceService::<AwsPorts>::new(clients.adapters(&cfg), ServiceConfig::default());

    let room = service
        .start_voice(&conn("c-ada"), &chat("chat-1"))
        .await
        .unwrap();
    assert_eq!(fake.channels().len(), 1);

    let grant = service
        .join_voice(&conn("c-bob="), room.id())
        .await
        .unwrap();
    assert_eq!(grant.peers.len(), 1);
    assert_eq!(fake.channels().len(), 2);
    assert!(matches!(
        &grant.credentials.credentials,
        Credentials::AwsSession { region, .. } if region == "us-east-1"
    ));

    let ended = service.end_voice(&conn("c-ada"), room.id()).await.unwrap();
    assert!(!ended.is_active());
    assert!(fake.channels().is_empty(), "every channel deleted");
    assert_eq!(
        service
            .ports()
            .store
            .active_in_chat_room(&chat("chat-1"))
            .await
            .unwrap(),
        None
    );
}
