//! [`Notifier`] on the API Gateway Management API: `PostToConnection` of the event, wrapped in
//! the wire protocol's [`EventEnvelope`], to one WebSocket connection.
//!
//! The client must point at the WebSocket API's management endpoint,
//! `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}` (or a custom domain's), which
//! differs per API and stage: see [`derive_endpoint`] and
//! [`AwsClients`](crate::config::AwsClients).
//!
//! A Lambda often learns that endpoint only from the events it receives, unless the operator
//! configures it, while its notifier is built once at cold start: [`EndpointNotifier`] picks
//! the endpoint per send: the configured one, else the one of the request being handled (a
//! task-local the handler sets with [`with_request_endpoint`]), else the last one seen (for the
//! scheduled sweep, which has no request context). It builds one inner notifier (one SDK
//! client) per endpoint and keeps it for the life of the instance.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use chat_domain::{event_frame, ChatEvent, ChatEvents, ChatStore};
use futures::StreamExt as _;
use tracing::{debug, info, warn};
use voice_domain::ports::{Notifier, NotifyError, PortFailure};
use voice_domain::protocol::EventEnvelope;
use voice_domain::{ConnectionId, VoiceEvent};

use crate::errors::sdk_failure;

/// The management endpoint of a WebSocket API stage, from the request context of any event it
/// delivers (`domainName`, `stage`): `https://{domainName}/{stage}`, or `None` when the event
/// does not name its domain. A missing stage yields the domain root; surrounding blanks and
/// slashes are ignored.
pub fn derive_endpoint(domain_name: Option<&str>, stage: Option<&str>) -> Option<String> {
    let domain = domain_name
        .map(|d| d.trim().trim_end_matches('/'))
        .filter(|d| !d.is_empty())?;
    Some(match stage.map(|s| s.trim().trim_matches('/')) {
        Some(stage) if !stage.is_empty() => format!("https://{domain}/{stage}"),
        _ => format!("https://{domain}"),
    })
}

tokio::task_local! {
    /// The management endpoint derived from the request being handled.
    static REQUEST_ENDPOINT: String;
}

/// Runs `fut` with `endpoint` as the current request's management endpoint (if any), for the
/// [`EndpointNotifier`]s it sends through.
pub async fn with_request_endpoint<F: Future>(endpoint: Option<String>, fut: F) -> F::Output {
    match endpoint {
        Some(e) => REQUEST_ENDPOINT.scope(e, fut).await,
        None => fut.await,
    }
}

/// The current request's management endpoint, if the handler set one.
fn request_endpoint() -> Option<String> {
    REQUEST_ENDPOINT.try_with(Clone::clone).ok()
}

/// Pushes events to API Gateway WebSocket connections. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiGatewayNotifier {
    client: Client,
}

impl ApiGatewayNotifier {
    /// A notifier through a management API client built once at start-up with the stage's
    /// endpoint (`endpoint_url`).
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// `PostToConnection` of one ready frame: the one call both the voice [`Notifier`] and
    /// [`ApiGatewayChatEvents`] make, so a closed socket maps to [`NotifyError::Gone`] once.
    ///
    /// # Errors
    /// [`NotifyError::Gone`] on `GoneException` (410: the socket is closed), else
    /// [`NotifyError::Unavailable`].
    pub async fn post(&self, to: &ConnectionId, frame: Vec<u8>) -> Result<(), NotifyError> {
        match self
            .client
            .post_to_connection()
            .connection_id(to.as_str())
            .data(Blob::new(frame))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.err().is_gone_exception() => {
                debug!(connection_id = %to, "connection is gone");
                Err(NotifyError::Gone)
            }
            Err(e) => Err(NotifyError::Unavailable(sdk_failure(
                "execute-api:PostToConnection",
                &e,
            ))),
        }
    }
}

#[async_trait]
impl Notifier for ApiGatewayNotifier {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&EventEnvelope::new(event)).map_err(|e| {
            NotifyError::Unavailable(PortFailure::permanent(format!(
                "could not serialize event: {e}"
            )))
        })?;
        self.post(to, body).await
    }
}

type Factory<N> = dyn Fn(&str) -> N + Send + Sync;

struct State<N> {
    notifiers: HashMap<String, Arc<N>>,
    last_seen: Option<String>,
}

/// A [`Notifier`] that routes each event through an inner notifier for the right endpoint,
/// built on first use by `factory` and cached. Clones share the cache.
pub struct EndpointNotifier<N> {
    configured: Option<String>,
    factory: Arc<Factory<N>>,
    state: Arc<Mutex<State<N>>>,
}

impl<N> Clone for EndpointNotifier<N> {
    fn clone(&self) -> Self {
        Self {
            configured: self.configured.clone(),
            factory: Arc::clone(&self.factory),
            state: Arc::clone(&self.state),
        }
    }
}

impl<N: Notifier> EndpointNotifier<N> {
    /// Routes to `configured` when set, otherwise to the request's derived endpoint; `factory`
    /// builds the inner notifier (an SDK client with that endpoint URL) once per endpoint.
    pub fn new(
        configured: Option<String>,
        factory: impl Fn(&str) -> N + Send + Sync + 'static,
    ) -> Self {
        Self {
            configured,
            factory: Arc::new(factory),
            state: Arc::new(Mutex::new(State {
                notifiers: HashMap::new(),
                last_seen: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<N>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The endpoint a send right now would go to.
    pub fn current_endpoint(&self) -> Option<String> {
        if let Some(c) = &self.configured {
            return Some(c.clone());
        }
        match request_endpoint() {
            Some(e) => {
                self.lock().last_seen = Some(e.clone());
                Some(e)
            }
            None => self.lock().last_seen.clone(),
        }
    }

    /// The endpoints an inner notifier has been built for (one SDK client each).
    pub fn endpoints(&self) -> Vec<String> {
        let mut v: Vec<_> = self.lock().notifiers.keys().cloned().collect();
        v.sort();
        v
    }

    fn notifier_for(&self, endpoint: &str) -> Arc<N> {
        if let Some(n) = self.lock().notifiers.get(endpoint) {
            return Arc::clone(n);
        }
        // Built outside the lock: a factory may be slow, and no lock is held across user code.
        let built = Arc::new((self.factory)(endpoint));
        let mut state = self.lock();
        Arc::clone(state.notifiers.entry(endpoint.to_owned()).or_insert(built))
    }

    /// The inner notifier for the endpoint a send right now goes to.
    ///
    /// # Errors
    /// [`NotifyError::Unavailable`] when no endpoint is configured or known yet.
    pub fn route(&self) -> Result<Arc<N>, NotifyError> {
        let Some(endpoint) = self.current_endpoint() else {
            return Err(NotifyError::Unavailable(PortFailure::permanent(
                "no API Gateway management endpoint known yet: configure one (APIGW_MANAGEMENT_ENDPOINT, \
                 docs/lambda.md) or handle a WebSocket event first",
            )));
        };
        Ok(self.notifier_for(&endpoint))
    }
}

#[async_trait]
impl<N: Notifier> Notifier for EndpointNotifier<N> {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        self.route()?.send(to, event).await
    }
}

/// Posts at most this many frames of one chat event at once: a room's fan-out must not open
/// a connection per member at the same time (the SDK's pool and API Gateway's per-account
/// rate are shared with every other invocation of the instance).
pub const CHAT_FAN_OUT_CONCURRENCY: usize = 8;
/// One chat event's whole fan-out ends by then; posts still running are abandoned (and
/// logged), so a slow endpoint cannot hold the request past its reply.
pub const CHAT_FAN_OUT_DEADLINE: Duration = Duration::from_secs(5);

/// The chat domain's [`ChatEvents`] on API Gateway: each event is serialised once with the
/// wire's one event format ([`event_frame`]) and posted through the same
/// [`EndpointNotifier`] (endpoint choice, one client per endpoint) as voice's events. A
/// connection API Gateway calls gone (`GoneException`: the socket closed without a
/// `$disconnect` reaching us yet) is unbound from the chat store, as `$disconnect` would
/// have done, so that later fan-outs stop posting to it.
#[derive(Clone)]
pub struct ApiGatewayChatEvents {
    notifier: EndpointNotifier<ApiGatewayNotifier>,
    store: Arc<dyn ChatStore>,
}

impl ApiGatewayChatEvents {
    /// Chat events through `notifier` (a clone of voice's, sharing its clients), cleaning up
    /// gone connections in `store`.
    pub fn new(notifier: EndpointNotifier<ApiGatewayNotifier>, store: Arc<dyn ChatStore>) -> Self {
        Self { notifier, store }
    }

    async fn post_one(&self, inner: &ApiGatewayNotifier, to: &ConnectionId, frame: Vec<u8>) {
        match inner.post(to, frame).await {
            Ok(()) => {}
            Err(NotifyError::Gone) => {
                info!(connection_id = %to, "chat event: the connection is gone; unbinding it");
                if let Err(e) = self.store.unbind_connection(to).await {
                    warn!(connection_id = %to, error = %e, "could not unbind a gone connection");
                }
            }
            Err(e) => warn!(connection_id = %to, error = %e, "chat event not delivered"),
        }
    }
}

#[async_trait]
impl ChatEvents for ApiGatewayChatEvents {
    async fn push(&self, to: &[ConnectionId], event: &ChatEvent) {
        if to.is_empty() {
            return;
        }
        let inner = match self.notifier.route() {
            Ok(inner) => inner,
            Err(e) => {
                warn!(error = %e, recipients = to.len(), "chat event not delivered");
                return;
            }
        };
        let frame = event_frame(event).into_bytes();
        // Built eagerly (not polled yet) so the stream holds plain futures, not a closure over
        // borrowed ids; at most CHAT_FAN_OUT_CONCURRENCY of them run at once.
        let posts: Vec<_> = to
            .iter()
            .map(|c| self.post_one(&inner, c, frame.clone()))
            .collect();
        let posts = futures::stream::iter(posts)
            .buffer_unordered(CHAT_FAN_OUT_CONCURRENCY)
            .collect::<Vec<()>>();
        if tokio::time::timeout(CHAT_FAN_OUT_DEADLINE, posts)
            .await
            .is_err()
        {
            warn!(
                recipients = to.len(),
                deadline_ms = CHAT_FAN_OUT_DEADLINE.as_millis() as u64,
                "chat event fan-out cut off at its deadline"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_domain_and_stage() {
        assert_eq!(
            derive_endpoint(
                Some("abc123.execute-api.us-east-1.amazonaws.com"),
                Some("prod")
            )
            .as_deref(),
            Some("https://abc123.execute-api.us-east-1.amazonaws.com/prod")
        );
        assert_eq!(
            derive_endpoint(Some(" chat.example.com/"), Some("/v1/")).as_deref(),
            Some("https://chat.example.com/v1")
        );
        assert_eq!(
            derive_endpoint(Some("ws.example.com"), None).as_deref(),
            Some("https://ws.example.com")
        );
        assert_eq!(
            derive_endpoint(Some("ws.example.com"), Some(" / ")).as_deref(),
            Some("https://ws.example.com")
        );
        assert_eq!(derive_endpoint(None, Some("prod")), None);
        assert_eq!(derive_endpoint(Some(" "), Some("prod")), None);
        assert_eq!(derive_endpoint(Some("/"), Some("prod")), None);
    }

    #[tokio::test]
    async fn the_request_endpoint_is_scoped_to_its_future() {
        assert_eq!(request_endpoint(), None);
        let inside =
            with_request_endpoint(Some("https://a/prod".into()), async { request_endpoint() })
                .await;
        assert_eq!(inside.as_deref(), Some("https://a/prod"));
        assert_eq!(request_endpoint(), None);
    }
}
