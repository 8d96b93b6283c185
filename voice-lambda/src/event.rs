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
}
