//! [`SignalingChannels`] on Kinesis Video Streams: one `SINGLE_MASTER` signaling channel per
//! participant (the mesh), created, described, deleted and listed through the control plane
//! (`aws-sdk-kinesisvideo`), with ICE servers from the signaling data plane
//! (`aws-sdk-kinesisvideosignaling`, `GetIceServerConfig` on the channel's HTTPS endpoint).
//!
//! No emulator exists for KVS signaling: this adapter is tested against a fake HTTP server that
//! speaks the documented REST-JSON paths and error shapes, so it is the least-tested adapter of
//! the crate (see `docs/aws-adapters.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_kinesisvideo::error::SdkError;
use aws_sdk_kinesisvideo::types::{
    ChannelInfo, ChannelNameCondition, ChannelProtocol, ChannelRole as KvsRole, ChannelType,
    ComparisonOperator, SingleMasterChannelEndpointConfiguration, Status, Tag,
};
use aws_sdk_kinesisvideosignaling::types::Service;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tracing::{debug, warn};
use voice_domain::ids::CHANNEL_NAME_PREFIX;
use voice_domain::ports::{
    ChannelEndpoints, ChannelError, ChannelTags, IceServer, ListedChannel, PortFailure, Secret,
    SignalingChannels,
};
use voice_domain::{
    ChannelArn, ChannelName, ChannelRole, ChatRoomId, ClientId, SignalingChannel, Timestamp,
    UserId, VoiceRoomId,
};

use crate::errors::sdk_failure;

/// Tag keys on every channel we create. `app` lets an operator (and an IAM condition on
/// `aws:ResourceTag/app`) tell this product's channels from others.
pub mod tag {
    /// The chat room.
    pub const CHAT_ROOM: &str = "chatRoomId";
    /// The voice room.
    pub const VOICE_ROOM: &str = "voiceRoomId";
    /// The participant who masters the channel.
    pub const OWNER: &str = "owner";
    /// Always [`APP_VALUE`].
    pub const APP: &str = "app";
    /// The `app` tag's value.
    pub const APP_VALUE: &str = "voice-rooms";
    /// The deployment (stack) that created the channel: the sweep deletes only channels with
    /// its own value, and the template's Delete permission requires it
    /// (`aws:ResourceTag/voiceStack`).
    pub const STACK: &str = "voiceStack";
}

/// How many `ListTagsForResource` calls the sweep's listing runs at once: enough to list
/// hundreds of channels in seconds, few enough to stay near the 50 TPS account quota
/// (throttles beyond it are retried by the client).
pub const TAG_LOOKUP_CONCURRENCY: usize = 4;

/// The listing's own deadline, well below the function's 30 s timeout so that the sweep has
/// time to delete what it found: channels whose tags were not read by then are left for the
/// next run (oldest are read first).
pub const LIST_DEADLINE: Duration = Duration::from_secs(10);

/// KVS's limit on a tag value's length.
const MAX_TAG_VALUE: usize = 256;

/// Signaling channels on Kinesis Video Streams. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KvsChannels {
    kvs: aws_sdk_kinesisvideo::Client,
    signaling: aws_sdk_kinesisvideosignaling::Client,
    activation_timeout: Duration,
    stack_id: Option<String>,
    /// (channel ARN, role) → (WSS, HTTPS) endpoints already asked for: a channel's endpoints do
    /// not change during its life, so a warm instance skips GetSignalingChannelEndpoint and a
    /// join makes one KVS round trip fewer per peer. Bounded: cleared at [`ENDPOINT_CACHE_MAX`].
    endpoint_cache: Arc<Mutex<EndpointCache>>,
}

/// (channel ARN, as master?) → (WSS endpoint, HTTPS endpoint).
type EndpointCache = HashMap<(String, bool), (String, String)>;

/// Entries of the endpoint cache before it is cleared (a few hundred bytes each).
pub const ENDPOINT_CACHE_MAX: usize = 4096;

/// How long [`SignalingChannels::create`] waits for a new channel to become `ACTIVE` (and
/// [`SignalingChannels::endpoints`] for a channel still `CREATING`), well below the Lambda's
/// 30 s timeout. AWS gives no figure for activation; seconds are typical.
pub const DEFAULT_ACTIVATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A random fraction in `[0, 1)` for jitter (uuid v4 is random; no extra dependency).
fn jitter() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

/// Sleeps before retry number `attempt` (250 ms × 1.5^attempt, capped at 1 s, ±20 % jitter:
/// never under 200 ms, so polling one channel stays within its 5 TPS quota). `false`, without
/// sleeping, when the sleep would end past `deadline`.
async fn sleep_before_retry(attempt: u32, deadline: Instant) -> bool {
    let base = (250.0 * 1.5f64.powi(attempt.min(10) as i32)).min(1000.0);
    let delay = Duration::from_millis((base * (0.8 + 0.4 * jitter())) as u64);
    if Instant::now() + delay > deadline {
        return false;
    }
    tokio::time::sleep(delay).await;
    true
}

impl KvsChannels {
    /// Channels through a control-plane client and a signaling data-plane client, both built
    /// once at start-up. The signaling client's own endpoint is never used: each
    /// `GetIceServerConfig` goes to the HTTPS endpoint KVS returns for the channel (a per-call
    /// endpoint override, so no client is built per request).
    pub fn new(
        kvs: aws_sdk_kinesisvideo::Client,
        signaling: aws_sdk_kinesisvideosignaling::Client,
    ) -> Self {
        Self {
            kvs,
            signaling,
            activation_timeout: DEFAULT_ACTIVATION_TIMEOUT,
            stack_id: None,
            endpoint_cache: Arc::default(),
        }
    }

    /// The same channels for the deployment `stack_id`: every channel created carries it (tag
    /// [`tag::STACK`]) and [`SignalingChannels::list`] returns only channels that carry it, so
    /// the sweep never touches another stack's or application's channels. Without one, `list`
    /// returns channels tagged `app=voice-rooms` (any stack).
    #[must_use]
    pub fn with_stack_id(mut self, stack_id: Option<String>) -> Self {
        self.stack_id = stack_id;
        self
    }

    /// Whether a listed channel's tags say this deployment created it.
    fn is_ours(&self, tags: &HashMap<String, String>) -> bool {
        tags.get(tag::APP).map(String::as_str) == Some(tag::APP_VALUE)
            && match &self.stack_id {
                Some(id) => tags.get(tag::STACK) == Some(id),
                None => true,
            }
    }

    /// The same channels with another activation deadline (tests; a deployment with slow
    /// activation).
    #[must_use]
    pub fn with_activation_timeout(mut self, timeout: Duration) -> Self {
        self.activation_timeout = timeout;
        self
    }

    /// The channel's current version, or `None` if it is gone or already being deleted.
    async fn current_version(&self, arn: &ChannelArn) -> Result<Option<String>, ChannelError> {
        let out = match self
            .kvs
            .describe_signaling_channel()
            .channel_arn(arn.as_str())
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                return match channel_error("kinesisvideo:DescribeSignalingChannel", &e) {
                    ChannelError::NotFound => Ok(None),
                    other => Err(other),
                }
            }
        };
        let info = out.channel_info.ok_or_else(|| {
            unavailable(PortFailure::retryable(
                "kinesisvideo:DescribeSignalingChannel: response has no ChannelInfo",
            ))
        })?;
        if info.channel_status == Some(Status::Deleting) {
            return Ok(None);
        }
        info.version.map(Some).ok_or_else(|| {
            unavailable(PortFailure::retryable(
                "kinesisvideo:DescribeSignalingChannel: response has no Version",
            ))
        })
    }

    /// Waits until a channel we just created is `ACTIVE`: CreateSignalingChannel is
    /// asynchronous, and until then GetSignalingChannelEndpoint and DeleteSignalingChannel answer
    /// `ResourceInUseException` (KVS API reference). Polls DescribeSignalingChannel with backoff
    /// and jitter, never faster than its 5 TPS per-channel quota, until `deadline`.
    async fn wait_active(&self, arn: &ChannelArn, deadline: Instant) -> Result<(), ChannelError> {
        let mut attempt = 0;
        loop {
            let out = self
                .kvs
                .describe_signaling_channel()
                .channel_arn(arn.as_str())
                .send()
                .await
                .map_err(|e| channel_error("kinesisvideo:DescribeSignalingChannel", &e))?;
            let status = out.channel_info.and_then(|i| i.channel_status);
            match status {
                Some(Status::Active) => return Ok(()),
                Some(Status::Deleting) => return Err(ChannelError::NotFound),
                _ => {}
            }
            if !sleep_before_retry(attempt, deadline).await {
                warn!(channel_arn = %arn, ?status, "signaling channel not ACTIVE before the deadline");
                return Err(unavailable(PortFailure::retryable(format!(
                    "kinesisvideo:CreateSignalingChannel: channel still {status:?} after {} ms",
                    self.activation_timeout.as_millis()
                ))));
            }
            attempt += 1;
        }
    }

    /// GetSignalingChannelEndpoint for (WSS, HTTPS), waiting out `ResourceInUseException`.
    async fn fetch_endpoints(
        &self,
        channel: &SignalingChannel,
        kvs_role: KvsRole,
    ) -> Result<(String, String), ChannelError> {
        // A channel someone else just created may still be CREATING: GetSignalingChannelEndpoint
        // then answers ResourceInUseException; wait with backoff until the deadline.
        let deadline = Instant::now() + self.activation_timeout;
        let mut attempt = 0;
        let out = loop {
            let res = self
                .kvs
                .get_signaling_channel_endpoint()
                .channel_arn(channel.arn.as_str())
                .single_master_channel_endpoint_configuration(
                    SingleMasterChannelEndpointConfiguration::builder()
                        .protocols(ChannelProtocol::Wss)
                        .protocols(ChannelProtocol::Https)
                        .role(kvs_role.clone())
                        .build(),
                )
                .send()
                .await;
            match res {
                Ok(out) => break out,
                Err(e)
                    if e.code() == Some("ResourceInUseException")
                        && sleep_before_retry(attempt, deadline).await =>
                {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(channel_error(
                        "kinesisvideo:GetSignalingChannelEndpoint",
                        &e,
                    ))
                }
            }
        };
        let mut wss = None;
        let mut https = None;
        for item in out.resource_endpoint_list.unwrap_or_default() {
            match (item.protocol, item.resource_endpoint) {
                (Some(ChannelProtocol::Wss), Some(url)) => wss = Some(url),
                (Some(ChannelProtocol::Https), Some(url)) => https = Some(url),
                _ => {}
            }
        }
        let (Some(wss), Some(https)) = (wss, https) else {
            return Err(unavailable(PortFailure::retryable(
                "kinesisvideo:GetSignalingChannelEndpoint: response lacks the WSS or HTTPS endpoint",
            )));
        };
        Ok((wss, https))
    }

    /// The (WSS, HTTPS) endpoints of `channel` for `role`, from the cache or
    /// GetSignalingChannelEndpoint.
    async fn wss_and_https(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
    ) -> Result<(String, String), ChannelError> {
        let kvs_role = match role {
            ChannelRole::Master => KvsRole::Master,
            ChannelRole::Viewer => KvsRole::Viewer,
        };
        let key = (channel.arn.as_str().to_owned(), role == ChannelRole::Master);
        let cached = self
            .endpoint_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(pair) = cached {
            return Ok(pair);
        }
        let pair = self.fetch_endpoints(channel, kvs_role).await?;
        let mut cache = self
            .endpoint_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if cache.len() >= ENDPOINT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, pair.clone());
        Ok(pair)
    }

    /// The regional STUN server for `channel` (no credentials, no call).
    fn stun(&self, channel: &SignalingChannel) -> IceServer {
        let region = region_of(&channel.arn)
            .map(str::to_owned)
            .or_else(|| self.kvs.config().region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".to_owned());
        IceServer {
            urls: vec![stun_url(&region)],
            username: None,
            credential: None,
        }
    }

    async fn tags_of(&self, arn: &str) -> Result<Option<HashMap<String, String>>, ChannelError> {
        let mut tags = HashMap::new();
        let mut next: Option<String> = None;
        loop {
            let res = self
                .kvs
                .list_tags_for_resource()
                .resource_arn(arn)
                .set_next_token(next.take())
                .send()
                .await;
            let out = match res {
                Ok(out) => out,
                Err(e) => {
                    return match channel_error("kinesisvideo:ListTagsForResource", &e) {
                        ChannelError::NotFound => Ok(None),
                        other => Err(other),
                    }
                }
            };
            tags.extend(out.tags.unwrap_or_default());
            match out.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => return Ok(Some(tags)),
            }
        }
    }

    async fn listed(&self, info: ChannelInfo) -> Result<Option<ListedChannel>, ChannelError> {
        if info.channel_status == Some(Status::Deleting) {
            return Ok(None);
        }
        let (Some(raw_name), Some(raw_arn)) = (info.channel_name, info.channel_arn) else {
            warn!("ListSignalingChannels returned a channel without name or ARN");
            return Ok(None);
        };
        let (name, arn) = match (ChannelName::parse(&raw_name), ChannelArn::parse(&raw_arn)) {
            (Ok(n), Ok(a)) => (n, a),
            _ => {
                warn!(channel = %raw_name, "skipping a channel whose name or ARN we cannot use");
                return Ok(None);
            }
        };
        let created_at = info.creation_time.map(to_timestamp).unwrap_or_default();
        let Some(tags) = self.tags_of(arn.as_str()).await? else {
            // Deleted between the listing and the tag lookup.
            return Ok(None);
        };
        if !self.is_ours(&tags) {
            debug!(channel = %raw_name, "not this stack's channel; the sweep leaves it alone");
            return Ok(None);
        }
        Ok(Some(ListedChannel {
            channel: SignalingChannel { name, arn },
            tags: channel_tags(&tags),
            created_at,
        }))
    }
}

/// Maps a KVS (control or data plane) error onto the port's contract.
fn channel_error<E>(operation: &str, err: &SdkError<E, HttpResponse>) -> ChannelError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err.code() {
        Some("ResourceNotFoundException") => ChannelError::NotFound,
        Some("AccountChannelLimitExceededException" | "AccountStreamLimitExceededException") => {
            warn!(
                operation,
                "signaling channel quota reached; raise it or sweep orphans"
            );
            ChannelError::LimitExceeded
        }
        _ => ChannelError::Unavailable(sdk_failure(operation, err)),
    }
}

fn unavailable(f: PortFailure) -> ChannelError {
    ChannelError::Unavailable(f)
}

fn to_timestamp(t: aws_smithy_types::DateTime) -> Timestamp {
    let secs = u64::try_from(t.secs()).unwrap_or(0);
    Timestamp::from_millis(
        secs.saturating_mul(1000)
            .saturating_add(u64::from(t.subsec_nanos() / 1_000_000)),
    )
}

/// Encodes an id as a KVS tag value, which allows only letters, digits, spaces and
/// `_.:/=+-@`: ASCII letters, digits and `_.:/+-@` pass, every other byte becomes `=XX`. `=`
/// itself is escaped, so the encoding is injective and [`decode_tag_value`] reverses it.
pub fn encode_tag_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_.:/+-@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Reverses [`encode_tag_value`]; `None` for a value it could not have produced.
pub fn decode_tag_value(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The tags we put on a channel, encoded; a value too long for KVS is left out (and logged),
/// since tags only inform the operator and the sweep, and must never stop a room from starting.
pub fn tags_for(tags: &ChannelTags) -> Vec<(String, String)> {
    let mut out = vec![(tag::APP.to_owned(), tag::APP_VALUE.to_owned())];
    for (key, value) in [
        (tag::CHAT_ROOM, tags.chat_room.as_str()),
        (tag::VOICE_ROOM, tags.voice_room.as_str()),
        (tag::OWNER, tags.owner.as_str()),
    ] {
        let encoded = encode_tag_value(value);
        if encoded.len() <= MAX_TAG_VALUE {
            out.push((key.to_owned(), encoded));
        } else {
            warn!(
                tag = key,
                "tag value too long once encoded; channel created without it"
            );
        }
    }
    out
}

/// Our tags from a channel's tag map; `None` unless all three are present and valid.
pub fn channel_tags(tags: &HashMap<String, String>) -> Option<ChannelTags> {
    let get = |k: &str| tags.get(k).and_then(|v| decode_tag_value(v));
    Some(ChannelTags {
        chat_room: ChatRoomId::parse(get(tag::CHAT_ROOM)?).ok()?,
        voice_room: VoiceRoomId::parse(get(tag::VOICE_ROOM)?).ok()?,
        owner: UserId::parse(get(tag::OWNER)?).ok()?,
    })
}

/// The region in a channel ARN (`arn:aws:kinesisvideo:REGION:ACCOUNT:channel/NAME/TIME`).
fn region_of(arn: &ChannelArn) -> Option<&str> {
    arn.as_str().split(':').nth(3).filter(|r| !r.is_empty())
}

/// The regional KVS STUN server, which needs no credentials.
pub fn stun_url(region: &str) -> String {
    format!("stun:stun.kinesisvideo.{region}.amazonaws.com:443")
}

#[async_trait]
impl SignalingChannels for KvsChannels {
    #[tracing::instrument(skip(self, tags), fields(channel = %name, voice_room_id = %tags.voice_room))]
    async fn create(
        &self,
        name: &ChannelName,
        tags: &ChannelTags,
    ) -> Result<SignalingChannel, ChannelError> {
        let mut req = self
            .kvs
            .create_signaling_channel()
            .channel_name(name.as_str())
            .channel_type(ChannelType::SingleMaster);
        let stack = self
            .stack_id
            .iter()
            .map(|id| (tag::STACK.to_owned(), id.clone()));
        for (key, value) in tags_for(tags).into_iter().chain(stack) {
            let t = Tag::builder().key(key).value(value).build().map_err(|e| {
                unavailable(PortFailure::permanent(format!(
                    "could not build a KVS tag: {e}"
                )))
            })?;
            req = req.tags(t);
        }
        let out = req
            .send()
            .await
            .map_err(|e| channel_error("kinesisvideo:CreateSignalingChannel", &e))?;
        let arn = out.channel_arn.ok_or_else(|| {
            unavailable(PortFailure::retryable(
                "kinesisvideo:CreateSignalingChannel: response has no ChannelARN",
            ))
        })?;
        let arn = ChannelArn::parse(arn).map_err(|e| {
            unavailable(PortFailure::permanent(format!(
                "kinesisvideo:CreateSignalingChannel returned an unusable ARN: {e}"
            )))
        })?;
        debug!(channel_arn = %arn, "signaling channel created; waiting for ACTIVE");
        self.wait_active(&arn, Instant::now() + self.activation_timeout)
            .await?;
        Ok(SignalingChannel {
            name: name.clone(),
            arn,
        })
    }

    #[tracing::instrument(skip(self), fields(channel = %channel.name))]
    async fn delete(&self, channel: &SignalingChannel) -> Result<(), ChannelError> {
        // DeleteSignalingChannel wants the version Describe reports; if someone changed the
        // channel in between, describe again once.
        for _ in 0..2 {
            let Some(version) = self.current_version(&channel.arn).await? else {
                return Ok(());
            };
            let res = self
                .kvs
                .delete_signaling_channel()
                .channel_arn(channel.arn.as_str())
                .current_version(version)
                .send()
                .await;
            match res {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("VersionMismatchException") => continue,
                // Still CREATING (a join that failed right after creating it): KVS refuses to
                // delete a channel that is not ACTIVE; wait for it, then try again.
                Err(e) if e.code() == Some("ResourceInUseException") => {
                    self.wait_active(&channel.arn, Instant::now() + self.activation_timeout)
                        .await?;
                    continue;
                }
                Err(e) => {
                    return match channel_error("kinesisvideo:DeleteSignalingChannel", &e) {
                        ChannelError::NotFound => Ok(()),
                        other => Err(other),
                    }
                }
            }
        }
        Err(unavailable(PortFailure::retryable(
            "kinesisvideo:DeleteSignalingChannel: the channel's version kept changing",
        )))
    }

    #[tracing::instrument(skip(self), fields(channel = %channel.name, ?role))]
    async fn endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        let (wss, https) = self.wss_and_https(channel, role).await?;
        let ice = self
            .signaling
            .get_ice_server_config()
            .channel_arn(channel.arn.as_str())
            .client_id(client_id.as_str())
            .service(Service::Turn)
            .customize()
            .config_override(
                aws_sdk_kinesisvideosignaling::config::Builder::default().endpoint_url(&https),
            )
            .send()
            .await
            .map_err(|e| channel_error("kinesisvideosignaling:GetIceServerConfig", &e))?;
        let mut ice_servers = vec![self.stun(channel)];
        ice_servers.extend(
            ice.ice_server_list
                .unwrap_or_default()
                .into_iter()
                .map(|s| IceServer {
                    urls: s.uris.unwrap_or_default(),
                    username: s.username,
                    credential: s.password.map(Secret::new),
                }),
        );
        Ok(ChannelEndpoints {
            wss,
            https: Some(https),
            ice_servers,
        })
    }

    /// The endpoints with the regional STUN server only: no `GetIceServerConfig` (a joiner's
    /// links all use its own channel's TURN servers), so a peer's channel costs at most one
    /// `GetSignalingChannelEndpoint`, and none once this instance has cached it.
    #[tracing::instrument(skip(self), fields(channel = %channel.name, ?role))]
    async fn signaling_endpoints(
        &self,
        channel: &SignalingChannel,
        role: ChannelRole,
        _client_id: &ClientId,
    ) -> Result<ChannelEndpoints, ChannelError> {
        let (wss, https) = self.wss_and_https(channel, role).await?;
        Ok(ChannelEndpoints {
            wss,
            https: Some(https),
            ice_servers: vec![self.stun(channel)],
        })
    }

    async fn list(&self) -> Result<Vec<ListedChannel>, ChannelError> {
        let deadline = Instant::now() + LIST_DEADLINE;
        let mut infos = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .kvs
                .list_signaling_channels()
                .channel_name_condition(
                    ChannelNameCondition::builder()
                        .comparison_operator(ComparisonOperator::BeginsWith)
                        .comparison_value(CHANNEL_NAME_PREFIX)
                        .build(),
                )
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| channel_error("kinesisvideo:ListSignalingChannels", &e))
                .map_err(|e| match e {
                    // Listing has no resource to miss; a "not found" here is a service problem.
                    ChannelError::NotFound => unavailable(PortFailure::retryable(
                        "kinesisvideo:ListSignalingChannels: ResourceNotFoundException",
                    )),
                    other => other,
                })?;
            infos.extend(out.channel_info_list.unwrap_or_default());
            match out.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => break,
            }
        }
        // Oldest first: the young ones are within the sweep's grace period anyway.
        infos.sort_by_key(|i| i.creation_time.map(|t| (t.secs(), t.subsec_nanos())));
        let total = infos.len();
        let mut listed = Vec::with_capacity(total);
        let mut looked_up = 0;
        let mut infos = infos.into_iter();
        loop {
            if Instant::now() >= deadline {
                warn!(
                    looked_up,
                    total,
                    "channel listing stopped at its deadline; the rest wait for the next sweep"
                );
                break;
            }
            let chunk: Vec<ChannelInfo> = infos.by_ref().take(TAG_LOOKUP_CONCURRENCY).collect();
            if chunk.is_empty() {
                break;
            }
            looked_up += chunk.len();
            for l in futures::future::join_all(chunk.into_iter().map(|i| self.listed(i))).await {
                if let Some(l) = l? {
                    listed.push(l);
                }
            }
        }
        Ok(listed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values_round_trip_and_use_only_the_allowed_alphabet() {
        for raw in ["alice", "room#1", "a=b", "=3D", "conn=A/B", "ünï", "x y"] {
            let enc = encode_tag_value(raw);
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:/=+-@".contains(&b)),
                "{enc}"
            );
            assert_eq!(decode_tag_value(&enc).as_deref(), Some(raw));
        }
        assert_ne!(encode_tag_value("a=3D"), encode_tag_value("a="));
        assert_eq!(decode_tag_value("bad=Z"), None);
    }

    #[test]
    fn tags_carry_app_and_the_three_ids() {
        let t = ChannelTags {
            chat_room: ChatRoomId::parse("room#1").unwrap(),
            voice_room: VoiceRoomId::parse("vr-1").unwrap(),
            owner: UserId::parse("alice").unwrap(),
        };
        let tags: HashMap<String, String> = tags_for(&t).into_iter().collect();
        assert_eq!(tags["app"], "voice-rooms");
        assert_eq!(tags["chatRoomId"], "room=231");
        assert_eq!(channel_tags(&tags), Some(t));
        let mut partial = tags.clone();
        partial.remove("owner");
        assert_eq!(channel_tags(&partial), None);
    }

    #[test]
    fn stun_url_and_region_come_from_the_arn() {
        let arn =
            ChannelArn::parse("arn:aws:kinesisvideo:eu-west-1:123:channel/voice-x/1").unwrap();
        assert_eq!(region_of(&arn), Some("eu-west-1"));
        assert_eq!(
            stun_url("eu-west-1"),
            "stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443"
        );
    }
}
