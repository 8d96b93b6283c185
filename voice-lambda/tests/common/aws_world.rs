//! The end-to-end tests' AWS world, built once here instead of per test file: a real
//! `moto_server` (DynamoDB, STS, Secrets Manager) with fresh tables, the AWS adapters' fake KVS,
//! the recording management API, and the Lambda built by the binary's own wiring
//! (`voice_lambda::aws::clients` + `aws::executor`) from the configuration it would read.

use voice_adapters_aws::testing::{
    create_chat_tables, create_pool_table, create_tables, FakeKvs, MotoServer, TestTables,
    TEST_ROLE_ARN,
};
use voice_adapters_aws::ChatTables;
use voice_lambda::aws::LambdaPorts;
use voice_lambda::{LambdaConfig, VoiceLambda};

use super::init_logs;
use super::management::FakeManagement;

/// Which chat the world's Lambda runs (`CHAT_MODE`).
pub enum Chat {
    /// `existing`: the test fills the chat app's tables itself.
    Existing,
    /// `builtin`: the four chat tables and a generated resume-key secret, as the template
    /// creates them.
    Builtin,
}

/// Everything an end-to-end test talks to. Fields drop in order: moto last.
pub struct AwsWorld {
    /// The handler, as `main` builds it.
    pub lambda: VoiceLambda<LambdaPorts>,
    /// KVS (not in moto).
    pub kvs: FakeKvs,
    /// Where events are posted.
    pub mgmt: FakeManagement,
    /// DynamoDB on moto, for looking at (or filling) the tables.
    pub ddb: aws_sdk_dynamodb::Client,
    /// The voice and chat tables' names.
    pub tables: TestTables,
    /// The built-in chat's tables (`Chat::Builtin` only).
    pub chat: Option<ChatTables>,
    /// The channel pool table, when the world pools channels (`CHANNEL_POOL_TABLE`).
    pub pool_table: Option<String>,
    /// Kills moto_server on drop.
    pub moto: MotoServer,
}

impl AwsWorld {
    /// Starts everything, or `None` when moto is not installed (failing under
    /// `VOICE_TEST_STRICT=1`).
    pub async fn start(mode: Chat) -> Option<Self> {
        Self::start_with(mode, false).await
    }

    /// As [`AwsWorld::start`], with a channel pool table (as the template creates it) when
    /// `pooled`.
    pub async fn start_with(mode: Chat, pooled: bool) -> Option<Self> {
        init_logs();
        let moto = MotoServer::start_or_skip()?;
        let tables = TestTables::unique();
        let ddb = moto.dynamodb();
        create_tables(&ddb, &tables).await.unwrap();
        let kvs = FakeKvs::start().await;
        let mgmt = FakeManagement::start().await;
        let mut env = vec![
            ("CONNECTIONS_TABLE", tables.connections.clone()),
            ("ROOMS_TABLE", tables.rooms.clone()),
            ("VOICE_ROOMS_TABLE", tables.voice_rooms.clone()),
            ("KVS_ROLE_ARN", TEST_ROLE_ARN.to_owned()),
            ("APIGW_MANAGEMENT_ENDPOINT", mgmt.endpoint("prod")),
        ];
        let pool_table = if pooled {
            let name = format!("ChannelPool-{}", tables.rooms);
            create_pool_table(&ddb, &name).await.unwrap();
            env.push(("CHANNEL_POOL_TABLE", name.clone()));
            Some(name)
        } else {
            None
        };
        let chat = match mode {
            Chat::Existing => {
                env.push(("CHAT_MODE", "existing".to_owned()));
                None
            }
            Chat::Builtin => {
                let chat = create_chat_tables(&ddb, &tables).await.unwrap();
                // The stack's secret, as the template's GenerateSecretString makes it.
                let secret = moto
                    .clients(&tables)
                    .secrets
                    .create_secret()
                    .name(format!("voice-resume-key-{}", tables.rooms))
                    .secret_string("k".repeat(64))
                    .send()
                    .await
                    .expect("moto creates the secret");
                env.push(("USERS_TABLE", chat.users_table.clone()));
                env.push(("MESSAGES_TABLE", chat.messages_table.clone()));
                env.push((
                    "RESUME_KEY_SECRET_ARN",
                    secret.arn().expect("an ARN").to_owned(),
                ));
                Some(chat)
            }
        };
        // The configuration the binary would read from the environment.
        let config = LambdaConfig::from_lookup(|name| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        })
        .unwrap();
        // The clients as `main` builds them, from an SdkConfig whose endpoint is moto (as
        // `AWS_ENDPOINT_URL` would set it); KVS is not in moto, so its two clients go to the fake.
        let mut clients = voice_lambda::aws::clients(&moto.sdk_config(), &config).unwrap();
        // The KVS clients as deployed (retries, the throttling classifier), on the fake, which
        // behaves as KVS documents it: channels CREATING before ACTIVE, per-channel TPS limits.
        clients.kvs = kvs.deployed_kvs_client();
        clients.kvs_signaling = kvs.deployed_signaling_client();
        let lambda = VoiceLambda::new(
            voice_lambda::aws::executor(&clients, &config)
                .await
                .expect("the Lambda starts (builtin: the key is read from Secrets Manager)"),
        );
        Some(Self {
            lambda,
            kvs,
            mgmt,
            ddb,
            tables,
            chat,
            pool_table,
            moto,
        })
    }
}
