//! [`Notifier`] on the API Gateway Management API: `PostToConnection` of the event, wrapped in
//! the wire protocol's [`EventEnvelope`], to one WebSocket connection.
//!
//! The client must point at the WebSocket API's management endpoint,
//! `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}` (or a custom domain's), which
//! differs per API and stage: see [`management_endpoint`] and
//! [`AwsClients`](crate::config::AwsClients).

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_apigatewaymanagement::Client;
use tracing::debug;
use voice_domain::ports::{Notifier, NotifyError, PortFailure};
use voice_domain::protocol::EventEnvelope;
use voice_domain::{ConnectionId, VoiceEvent};

use crate::errors::sdk_failure;

/// The management endpoint of a WebSocket API stage, from the request context of any event it
/// delivers (`domainName`, `stage`): `https://{domain_name}/{stage}`.
pub fn management_endpoint(domain_name: &str, stage: &str) -> String {
    format!(
        "https://{}/{}",
        domain_name.trim_end_matches('/'),
        stage.trim_matches('/')
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_endpoint_joins_domain_and_stage() {
        assert_eq!(
            management_endpoint("abc123.execute-api.us-east-1.amazonaws.com", "prod"),
            "https://abc123.execute-api.us-east-1.amazonaws.com/prod"
        );
        assert_eq!(
            management_endpoint("chat.example.com/", "/v1/"),
            "https://chat.example.com/v1"
        );
    }
}
