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

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use tracing::debug;
use voice_domain::ports::{Notifier, NotifyError, PortFailure};
use voice_domain::protocol::EventEnvelope;
use voice_domain::{ConnectionId, VoiceEvent};

use crate::config::ENV_MANAGEMENT_ENDPOINT;
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
}

#[async_trait]
impl Notifier for ApiGatewayNotifier {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&EventEnvelope::new(event)).map_err(|e| {
            NotifyError::Unavailable(PortFailure::permanent(format!(
                "could not serialize event: {e}"
            )))
        })?;
        match self
            .client
            .post_to_connection()
            .connection_id(to.as_str())
            .data(Blob::new(body))
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
}

#[async_trait]
impl<N: Notifier> Notifier for EndpointNotifier<N> {
    async fn send(&self, to: &ConnectionId, event: &VoiceEvent) -> Result<(), NotifyError> {
        let Some(endpoint) = self.current_endpoint() else {
            return Err(NotifyError::Unavailable(PortFailure::permanent(format!(
                "no API Gateway management endpoint known yet: set {} or handle a WebSocket event first",
                ENV_MANAGEMENT_ENDPOINT
            ))));
        };
        let inner = self.notifier_for(&endpoint);
        inner.send(to, event).await
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
