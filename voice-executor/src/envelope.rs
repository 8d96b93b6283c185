//! The envelope every request frame carries (`action`, `requestId`) and the reply frame that
//! echoes it. Parsed once here for both entrypoints, so the envelope's rules (an object, an
//! action, a `requestId` of at most [`MAX_REQUEST_ID_CHARS`] characters) hold everywhere.

use serde_json::Value;
use voice_domain::protocol::{Reply, WireError};

/// Longest accepted `requestId`, in characters: the client's correlation id, echoed in the
/// reply, so it must not let one request make a large reply or log line.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// The envelope's `requestId` and `action`, read as far as the frame allows (so even a refusal
/// can be matched by the client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The request id, if a valid one was sent.
    pub request_id: Option<String>,
    /// The action, if one was sent (empty otherwise).
    pub action: String,
}

/// Parses a frame's JSON and its envelope.
///
/// # Errors
/// The envelope read so far and a `BAD_REQUEST` saying what is wrong with the frame.
pub fn parse_frame(text: &str) -> Result<(Envelope, Value), (Envelope, WireError)> {
    if text.trim().is_empty() {
        return Err((
            Envelope::default(),
            WireError::bad_request(
                "the frame is empty; send a JSON object such as {\"action\":\"ping\"}",
            ),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        (
            Envelope::default(),
            WireError::bad_request(format!("the frame is not valid JSON: {e}")),
        )
    })?;
    let Some(obj) = value.as_object() else {
        return Err((
            Envelope::default(),
            WireError::bad_request("the frame must be a JSON object with an \"action\""),
        ));
    };
    let action = obj
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let request_id = match obj.get("requestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_REQUEST_ID_CHARS => Some(s.clone()),
        Some(_) => {
            return Err((
                Envelope {
                    request_id: None,
                    action,
                },
                WireError::bad_request(format!(
                    "requestId must be a string of at most {MAX_REQUEST_ID_CHARS} characters"
                )),
            ))
        }
    };
    let env = Envelope { request_id, action };
    if env.action.is_empty() {
        return Err((
            env,
            WireError::bad_request("missing \"action\" (a string naming the request)"),
        ));
    }
    Ok((env, value))
}

/// Serialises a reply frame for `env`.
pub fn reply_frame(env: &Envelope, result: Result<Value, WireError>) -> String {
    let reply = match result {
        Ok(data) => Reply::ok(env.request_id.clone(), env.action.clone(), data),
        Err(e) => Reply::err(env.request_id.clone(), env.action.clone(), e),
    };
    // A `Reply<Value>` is strings, bools and an already-built `Value`: nothing in it can fail to
    // serialise, but a fixed frame is still better than a panic.
    serde_json::to_string(&reply).unwrap_or_else(|_| {
        r#"{"type":"reply","action":"","ok":false,"error":{"code":"INTERNAL","message":"the reply could not be encoded","retryable":false}}"#.to_owned()
    })
}

/// The reply to a binary frame: requests are JSON text on both deployments.
pub fn binary_frame_reply() -> String {
    reply_frame(
        &Envelope::default(),
        Err(WireError::bad_request(
            "binary frames are not supported; send the request as a JSON text frame",
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelopes_are_read_as_far_as_possible() {
        let (env, e) = parse_frame("{nope").unwrap_err();
        assert_eq!(e.code, "BAD_REQUEST");
        assert!(env.request_id.is_none());
        let (env, e) = parse_frame(r#"{"requestId":"r1"}"#).unwrap_err();
        assert_eq!(
            (env.request_id.as_deref(), e.code.as_str()),
            (Some("r1"), "BAD_REQUEST")
        );
        let (_, e) = parse_frame(r#"{"action":"x","requestId":5}"#).unwrap_err();
        assert_eq!(e.code, "BAD_REQUEST");
        let long = "r".repeat(MAX_REQUEST_ID_CHARS + 1);
        let (env, e) =
            parse_frame(&json!({"action":"ping","requestId":long}).to_string()).unwrap_err();
        assert_eq!(
            (env.action.as_str(), e.code.as_str()),
            ("ping", "BAD_REQUEST")
        );
        assert!(parse_frame("[1]").is_err());
        assert!(parse_frame("  ").unwrap_err().1.message.contains("empty"));
        let (env, _) = parse_frame(r#"{"action":"listRooms","requestId":"7"}"#).unwrap();
        assert_eq!(env.action, "listRooms");
    }

    #[test]
    fn replies_echo_request_id_and_action() {
        let env = Envelope {
            request_id: Some("r9".into()),
            action: "hello".into(),
        };
        let v: Value = serde_json::from_str(&reply_frame(&env, Ok(json!({"a":1})))).unwrap();
        assert_eq!(
            v,
            json!({"type":"reply","requestId":"r9","action":"hello","ok":true,"data":{"a":1}})
        );
        let v: Value = serde_json::from_str(&binary_frame_reply()).unwrap();
        assert_eq!(v["error"]["code"], "BAD_REQUEST");
    }
}
