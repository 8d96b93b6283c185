//! Recognising the invocation: an API Gateway WebSocket route event or an EventBridge schedule.
//!
//! Why by hand from a `serde_json::Value`: `lambda_runtime` deserialises the payload before the
//! handler runs, so a payload that does not fit `ApiGatewayWebsocketProxyRequest` (the
//! original's console test event has no `routeKey`, `connectedAt` or `requestTimeEpoch`) would
//! fail the invocation with a runtime error the caller never sees. Taking a `Value` and
//! converting here turns every malformed event into a 400 reply with a message.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use serde_json::{Map, Value};

/// What the function was invoked with.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// A WebSocket route (`requestContext.routeKey`), `$disconnect` or `$default`.
    WebSocket(Box<ApiGatewayWebsocketProxyRequest>),
    /// An EventBridge scheduled event: run the sweep.
    Scheduled,
    /// A CloudFormation custom resource request (the stack's `Custom::ChannelDrain`): on
    /// `Delete`, the deployment's channels are deleted; the answer goes to `ResponseURL`.
    CustomResource(Box<CustomResourceRequest>),
}

/// What CloudFormation sends a custom resource's function ("Custom resource request objects"
/// in the CloudFormation user guide). Only the fields the answer must echo are kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomResourceRequest {
    /// `Create`, `Update` or `Delete`.
    pub request_type: CustomResourceAction,
    /// The presigned S3 URL the answer is PUT to.
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    /// The stack's ARN.
    pub stack_id: String,
    /// This request's id.
    pub request_id: String,
    /// The resource's logical id in the template.
    pub logical_resource_id: String,
    /// Absent on `Create`; the answer must repeat it on `Update` and `Delete`, or
    /// CloudFormation takes the resource as replaced.
    #[serde(default)]
    pub physical_resource_id: Option<String>,
}

/// A custom resource request's `RequestType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum CustomResourceAction {
    /// The stack is created (or the resource added).
    Create,
    /// The resource's properties changed.
    Update,
    /// The stack is deleted (or the resource removed, or a failed creation rolled back).
    Delete,
}

/// The event is neither a WebSocket route event nor a scheduled event; the message says what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedEvent(pub String);

const EXPECTED: &str = "expected an API Gateway WebSocket event (requestContext.routeKey, \
requestContext.connectionId, body) or an EventBridge scheduled event (source aws.events, \
detail-type Scheduled Event)";

/// Classifies a raw invocation payload.
///
/// # Errors
/// [`MalformedEvent`] when the payload is not a JSON object, is an EventBridge event other than
/// a schedule, has no `requestContext` object, or its fields have the wrong types.
pub fn classify(payload: Value) -> Result<Invocation, MalformedEvent> {
    let Value::Object(mut event) = payload else {
        return Err(MalformedEvent(format!(
            "the event is not a JSON object; {EXPECTED}"
        )));
    };
    if event.contains_key("RequestType") && event.contains_key("ResponseURL") {
        return serde_json::from_value(Value::Object(event))
            .map(|r| Invocation::CustomResource(Box::new(r)))
            .map_err(|e| {
                MalformedEvent(format!(
                    "malformed CloudFormation custom resource request: {e}"
                ))
            });
    }
    if event.get("source").and_then(Value::as_str) == Some("aws.events") {
        return match event.get("detail-type").and_then(Value::as_str) {
            Some("Scheduled Event") => Ok(Invocation::Scheduled),
            other => Err(MalformedEvent(format!(
                "unsupported EventBridge event (detail-type {other:?}); only \"Scheduled Event\" (the sweep) is handled"
            ))),
        };
    }
    let Some(Value::Object(context)) = event.get_mut("requestContext") else {
        return Err(MalformedEvent(format!(
            "requestContext is missing or not an object; {EXPECTED}"
        )));
    };
    // Numbers API Gateway always sends but a hand-written test event may not; they are not used.
    fill_zero(context, "connectedAt");
    fill_zero(context, "requestTimeEpoch");
    serde_json::from_value(Value::Object(event))
        .map(|r| Invocation::WebSocket(Box::new(r)))
        .map_err(|e| MalformedEvent(format!("malformed API Gateway WebSocket event: {e}")))
}

fn fill_zero(map: &mut Map<String, Value>, key: &str) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), Value::from(0));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_originals_test_payload_is_a_websocket_event_without_route() {
        let v =
            json!({"requestContext":{"connectionId":"test"},"body":"{\"roomId\":\"test-room\"}"});
        let Invocation::WebSocket(r) = classify(v).unwrap() else {
            panic!("not a websocket event")
        };
        assert_eq!(r.request_context.connection_id.as_deref(), Some("test"));
        assert_eq!(r.request_context.route_key, None);
        assert_eq!(r.body.as_deref(), Some("{\"roomId\":\"test-room\"}"));
    }

    #[test]
    fn schedules_are_recognised_and_other_eventbridge_events_refused() {
        let v = json!({"source":"aws.events","detail-type":"Scheduled Event","detail":{}});
        assert!(matches!(classify(v), Ok(Invocation::Scheduled)));
        let v =
            json!({"source":"aws.events","detail-type":"EC2 Instance State-change Notification"});
        let e = classify(v).unwrap_err();
        assert!(e.0.contains("EC2 Instance"), "{e}");
    }

    #[test]
    fn non_events_are_refused_with_what_was_expected() {
        for v in [
            json!([1, 2]),
            json!("x"),
            json!({}),
            json!({"requestContext": 3}),
        ] {
            let e = classify(v).unwrap_err();
            assert!(e.0.contains("requestContext"), "{e}");
        }
        let e = classify(json!({"requestContext": {"routeKey": 5}})).unwrap_err();
        assert!(e.0.contains("malformed"), "{e}");
    }

    #[test]
    fn a_cloudformation_request_is_a_custom_resource_and_a_malformed_one_says_why() {
        let v = json!({
            "RequestType": "Delete",
            "ResponseURL": "https://cfn.example/answer",
            "StackId": "arn:aws:cloudformation:us-east-1:1:stack/voice/1",
            "RequestId": "r1",
            "LogicalResourceId": "ChannelDrain",
            "PhysicalResourceId": "voice-channel-drain",
            "ResourceType": "Custom::ChannelDrain",
            "ResourceProperties": {}
        });
        let Invocation::CustomResource(r) = classify(v.clone()).unwrap() else {
            panic!("not a custom resource request")
        };
        assert_eq!(r.request_type, CustomResourceAction::Delete);
        assert_eq!(
            r.physical_resource_id.as_deref(),
            Some("voice-channel-drain")
        );
        let mut bad = v;
        bad["RequestType"] = json!("Explode");
        let e = classify(bad).unwrap_err();
        assert!(e.0.contains("custom resource"), "{e}");
    }
}
